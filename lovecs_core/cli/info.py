"""``lovecs info MODEL``: print the model card."""

from __future__ import annotations

import argparse
import json
import sys

from ..contract import RESULT
from ..model.card import read_card
from ..model.card_fields import HEAD_CONTEXT, HEAD_FEATURES
from ..progress import Reporter, emit_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a model file's card")
    p.add_argument("model", help="model file (.lovecs)")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    card = read_card(args.model)
    if args.progress == "json":
        emit_json(sys.stdout, RESULT, card=card.to_dict())
        return 0
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
        return 0
    arch = card.architecture
    print(f"{card.name}")
    print(
        f"  architecture : {arch.get('arch')} {arch.get('encoder', '')}"
        f"{' + CSN' if arch.get('csn') else ''}"
        f"{_widened_head(arch)}"
    )
    print(
        f"  bands        : {card.band_count} ({', '.join(card.band_names)}), "
        f"{card.band_dtype} {tuple(card.band_range)}"
    )
    print(f"  GSD          : {card.gsd if card.gsd is not None else 'unknown'} m")
    print(f"  tile/overlap : {card.tile_size}/{card.overlap} px")
    print(f"  domains      : {', '.join(card.normalization)} (default {card.default_domain})")
    print("  classes      :")
    for c in card.classes:
        print(f"    {c.code:3d} {c.color} {c.name}")
    health = card.adaptation.get("health") or {}
    if health:
        print(
            f"  health check : {health['verdict']} (agreement on confident pixels "
            f"{100 * health['agreement_confident']:.0f} %, class shares moved "
            f"{100 * health['class_shift']:.0f} %); result: {card.adaptation.get('result')}"
        )
    alignment = card.adaptation.get("alignment") or {}
    if alignment.get("summary"):
        print(f"  alignment    : {alignment['summary']}")
    sample = card.provenance.get("source_sample")
    if sample:
        print(f"  source sample: {sample.get('crops')} labelled crops of {sample.get('side')} px")
    for key in ("provenance", "adaptation", "scores"):
        value = getattr(card, key)
        if value:
            print(f"  {key:13s}: {json.dumps(value)}")
    return 0


def _widened_head(arch: dict) -> str:
    """`` + head with N random features[ and a K-cell context]`` for a widened head."""
    if not arch.get(HEAD_FEATURES):
        return ""
    context = f" and a {arch[HEAD_CONTEXT]}-cell context" if arch.get(HEAD_CONTEXT) else ""
    return f" + head with {arch[HEAD_FEATURES]} random features{context}"
