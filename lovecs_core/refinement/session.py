"""The refine session: one engine process the dock keeps alive. It holds the model and the
features of the current view, so that a refine answers in a second or two.

Requests and replies are JSON lines (:data:`~lovecs_core.contract.SESSION_REQUESTS`); each
handler here takes a request's keys and returns the reply's keys.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

from ..checks.outputs import same_path
from ..compute.device import resolve_device
from ..contract import MAX_VIEW_PIXELS, OPEN, QUIT, REFINE, RESET, SAVE, UNDO, VIEW
from ..model.card import read_source_sample
from ..model.networks import model_from_file
from ..progress import Reporter
from ..rasters.corrections import read_corrections
from .features import open_region, region_features
from .head import HeadWeights
from .refiner import RefineOutcome, Refiner
from .run import sample_state


class SessionError(ValueError):
    """A request that cannot be answered (no model open, no view yet, an unknown request)."""


class RefineSession:
    """State of one session: the model, the view, and the history of refined heads."""

    def __init__(self, reporter: Optional[Reporter] = None) -> None:
        self.reporter = reporter or Reporter()
        self.refiner: Optional[Refiner] = None
        self.sample: Optional[tuple[np.ndarray, np.ndarray]] = None
        self.history: list[tuple[HeadWeights, Optional[RefineOutcome]]] = []
        self.model_path = ""
        self.handlers: dict[str, Callable[..., dict[str, Any]]] = {
            OPEN: self.open,
            VIEW: self.view,
            REFINE: self.refine,
            UNDO: self.undo,
            RESET: self.reset,
            SAVE: self.save,
            QUIT: lambda: {},
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("request")
        if name not in self.handlers:
            raise SessionError(f"unknown request {name!r} (known: {', '.join(self.handlers)})")
        args = {k: v for k, v in request.items() if k not in ("id", "request")}
        start = time.perf_counter()
        reply = self.handlers[name](**args)
        reply["seconds"] = round(time.perf_counter() - start, 3)
        return reply

    # -- requests -----------------------------------------------------------------------------
    def open(self, model: str, device: str = "auto") -> dict[str, Any]:
        card, net = model_from_file(model)
        self.sample = read_source_sample(model)
        self.refiner = Refiner(card, net, resolve_device(device), self.sample)
        self.model_path, self.history = model, []
        return {"model": model, "classes": len(card.classes), "device": str(self.refiner.device)}

    def view(self, raster: str, map: str, bands: Any = None, extent: Any = None) -> dict[str, Any]:
        refiner = self._refiner()
        region = open_region(refiner.card, refiner.net, raster, bands, extent)
        feats = region_features(
            refiner.card, refiner.split, region, refiner.device, self.reporter, MAX_VIEW_PIXELS
        )
        refiner.use_region(region, feats)
        height, width = region.size
        return {"map": str(refiner.write_map(self.current, map)), "pixels": height * width}

    def refine(
        self, points: str, map: str, class_field: Optional[str] = None, layer: Optional[str] = None
    ) -> dict[str, Any]:
        refiner = self._view()
        assert refiner.region is not None
        corrections = read_corrections(
            points, refiner.region.grid, refiner.card.class_codes(), class_field, layer
        )
        outcome = refiner.refine(corrections)
        self.history.append((outcome.weights, outcome))
        return {
            "map": str(refiner.write_map(outcome.weights, map)),
            "corrections": corrections.summary(),
            "problems": corrections.problems,
            "accuracy": outcome.accuracy,
            "refines": len(self.history),
        }

    def undo(self, map: str) -> dict[str, Any]:
        if self.history:
            self.history.pop()
        return {"map": str(self._view().write_map(self.current, map)), "refines": len(self.history)}

    def reset(self, map: str) -> dict[str, Any]:
        self.history = []
        return {"map": str(self._view().write_map(self.current, map)), "refines": 0}

    def save(self, out: str) -> dict[str, Any]:
        refiner = self._refiner()
        if same_path(out, self.model_path):
            raise SessionError(f"{out} is the model this session started from: choose another name")
        outcome = self.history[-1][1] if self.history else None
        saved = refiner.save(self.current, out, outcome, sample_state(self.sample))
        return {"output": str(saved), "refines": len(self.history)}

    # -- state --------------------------------------------------------------------------------
    @property
    def current(self) -> HeadWeights:
        refiner = self._refiner()
        return self.history[-1][0] if self.history else refiner.source_head

    def _refiner(self) -> Refiner:
        if self.refiner is None:
            raise SessionError("no model open: send an 'open' request first")
        return self.refiner

    def _view(self) -> Refiner:
        refiner = self._refiner()
        if refiner.feats is None:
            raise SessionError("no view yet: send a 'view' request first")
        return refiner
