# Read by Packer >= 1.7 only (`packer init packer/`, which mlbatch.release.bake runs before a
# build); Packer 1.6 has these built in and rejects this block, so mlbatch hands it
# packer/mlbatch.pkr.hcl alone (and refuses it for GCP releases: see bake.check_packer).
# Each plugin is pinned exactly: a release bakes with the plugin versions of its commit.
# `packer init` fetches them from their GitHub releases (Packer has no lock file: the pin is
# the version, not a checksum of ours). Bump deliberately, with the plugins' changelogs at hand.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    docker = {
      source  = "github.com/hashicorp/docker"
      version = "= 1.1.4"
    }
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = "= 1.2.7"
    }
    ansible = {
      source  = "github.com/hashicorp/ansible"
      version = "= 1.1.6"
    }
  }
}
