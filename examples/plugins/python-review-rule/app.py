"""classification-review, written in Python: the bundled Rust review rule's behaviour, decision for
decision and reason for reason, built into a component with componentize-py (see README.md).

Config (`[plugins.NAME.config]`): `review` (classifications that need a review, default
`sensitive`), `block` (classifications refused outright, default none), `changes` (change kinds
the rule applies to, default `added,modified,deleted`).
"""

from wit_world import exports
from wit_world.exports import describe, evaluate
from wit_world.imports import config, types


def _list(key: str, default: str) -> list[str]:
    value = config.get(key)
    return [item.strip() for item in (default if value is None else value).split(",") if item.strip()]


_KINDS = {"added": types.ChangeKind.ADDED, "modified": types.ChangeKind.MODIFIED, "deleted": types.ChangeKind.DELETED}


class Evaluate(exports.Evaluate):
    def evaluate(self, orders: list[types.Order]) -> list[evaluate.Decision]:
        review = _list("review", "sensitive")
        block = _list("block", "")
        changes = []
        for kind in _list("changes", "added,modified,deleted"):
            if kind not in _KINDS:
                # A config error is the operator's to fix: fail the batch with the reason.
                raise ValueError(f"config key `changes`: unknown change kind `{kind}` (expected added, modified or deleted)")
            changes.append(_KINDS[kind])
        decisions: list[evaluate.Decision] = []
        for order in orders:
            cls = order.classification
            if order.change not in changes:
                decisions.append(evaluate.Decision_NoReview())
            elif cls in block:
                decisions.append(evaluate.Decision_Blocked(
                    f"resource type {order.resource_type} is classified `{cls}`, which this policy blocks"))
            elif cls in review:
                decisions.append(evaluate.Decision_ReviewNeeded(
                    f"resource type {order.resource_type} is classified `{cls}`, which needs a review"))
            else:
                decisions.append(evaluate.Decision_NoReview())
        return decisions


class Describe(exports.Describe):
    def describe(self) -> describe.Description:
        return describe.Description(
            name="python-classification-review",
            version="0.1.0",
            summary="The classification review rule, in Python.",
            resource_types=[],
        )
