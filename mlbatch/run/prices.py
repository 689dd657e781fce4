"""Estimated cost of an instance from the price table (mlbatch/run/prices.yaml, or the
profile's `price_table`): machine type, Spot or on-demand, region, GPUs and seconds."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mlbatch.core import machines
from mlbatch.core.errors import BadInput


@dataclasses.dataclass(frozen=True)
class PriceTable:
    data: dict[str, Any]
    origin: str  # the file it came from

    @property
    def source(self) -> str:
        return f"{self.data.get('source', '?')} as of {self.data.get('date', '?')} ({self.data.get('currency', 'USD')})"

    def hourly(self, machine_type: str, spot: bool, region: str, gpu_type: str = "", gpu_count: int = 0) -> float | None:
        """USD per hour, or None when the table does not know the region, family or GPU."""
        shape = machines.shape(machine_type)  # the one table of shapes, shared with the job's limits
        rates = self.data.get("regions", {}).get(region, {}).get(machine_type.split("-")[0])
        if shape is None or rates is None:
            return None
        rate = rates["spot" if spot else "on_demand"]
        price = shape.vcpus * float(rate["vcpu"]) + shape.memory_gb * float(rate["gb"])
        if gpu_count:
            gpu = self.data.get("gpus", {}).get(gpu_type)
            if gpu is None:
                return None
            price += gpu_count * float(gpu["spot" if spot else "on_demand"])
        return price

    def cost(self, hourly: float, seconds: float) -> float:
        billed = max(seconds, float(self.data.get("billing", {}).get("minimum_seconds", 0)))
        return hourly * billed / 3600


def load_prices(path: Path | None = None) -> PriceTable:
    if path is None:
        text = resources.files("mlbatch.run").joinpath("prices.yaml").read_text()
        origin = "mlbatch/run/prices.yaml"
    else:
        try:
            text, origin = path.read_text(), str(path)
        except OSError as exc:
            raise BadInput(f"price_table {str(path)!r} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"price table {origin} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("regions"), dict) or not data.get("date") or not data.get("source"):
        raise BadInput(f"price table {origin}: expected a mapping with source, date and regions (see mlbatch/run/prices.yaml)")
    return PriceTable(data, origin)
