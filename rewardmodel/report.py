"""Plain-text tables of a version's metrics (for the commands)."""

from __future__ import annotations

WHO = ["model", "population", "per_annotator_ridge", "loo_consensus"]
LABEL = {
    "model": "personalised",
    "population": "population",
    "per_annotator_ridge": "per-ann. ridge",
    "loo_consensus": "LOO consensus",
}


def _cell(block: dict, who: str) -> str:
    m = block.get(who) or {}
    acc, ci = m.get("pairwise_accuracy"), m.get("pairwise_accuracy_ci95")
    if acc is None:
        return "-"
    return f"{acc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def metrics_table(metrics: dict) -> str:
    """Test pairwise accuracy (mean over annotators, 95% interval) of the model
    and each baseline: test_seen, then test_unseen at every k."""
    rows = [("test_seen", metrics["seen"])]
    rows += [(f"test_unseen {k}", b) for k, b in metrics.get("unseen", {}).items()]
    cells = [
        [name, str(b.get("n_annotators", 0))] + [_cell(b, w) for w in WHO]
        for name, b in rows
    ]
    head = ["split", "n"] + [LABEL[w] for w in WHO]
    widths = [max(len(r[i]) for r in [head, *cells]) for i in range(len(head))]
    lines = [
        "mean per-annotator pairwise accuracy on TEST [95% interval over annotators]",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells
    ]
    sel = metrics.get("selection", {})
    if sel:
        lines.append(
            "selected on validation only: "
            f"val_seen pairwise accuracy {sel.get('val_seen_pairwise_accuracy', 0):.3f}"
            f" ({sel.get('val_seen_annotators')} annotators), hyper-parameters "
            f"{metrics.get('hyper')}"
        )
    return "\n".join(lines)
