"""The VPC network and subnetwork that instances, Batch VMs and the bake VM join.

With Shared VPC (https://cloud.google.com/vpc/docs/shared-vpc) they belong to a host project
other than the one the instances are in: `network_project` in the profile (the project itself
when unset). Every resource path is built here, so no caller assumes they are the project's.
"""

from __future__ import annotations

import dataclasses

from mlbatch.core.settings import Settings


@dataclasses.dataclass(frozen=True)
class Vpc:
    project: str  # the project that owns the network: the Shared VPC host, or the project itself
    region: str
    network_name: str
    subnetwork_name: str  # "" for an auto-mode network's subnet of the region (same name as the network)

    @property
    def network(self) -> str:
        return f"projects/{self.project}/global/networks/{self.network_name}"

    @property
    def subnetwork(self) -> str:
        """The subnetwork's path, or "" (instances then take the auto-mode subnet of the network)."""
        if not self.subnetwork_name:
            return ""
        return f"projects/{self.project}/regions/{self.region}/subnetworks/{self.subnetwork_name}"

    @property
    def subnet_to_check(self) -> str:
        """The subnet instances land in, by name: the named one, or the auto-mode one named like the network."""
        return self.subnetwork_name or self.network_name


def vpc(settings: Settings) -> Vpc:
    return Vpc(settings.network_project or settings.project, settings.region, settings.network, settings.subnetwork)
