"""Bounds on what one GraphQL request may ask for, and where a bad input value sits.

``QueryLimits`` rejects operations nested deeper than ``MAX_DEPTH`` or selecting more than
``MAX_FIELDS`` fields (fragments expanded, aliases counted), before anything executes.
Introspection (``__schema``, ``__type``) is left to graphql-core's own introspection depth
rule so that schema explorers keep working.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    Node,
    ObjectFieldNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableDefinitionNode,
    VariableNode,
)
from graphql.language import BREAK, SKIP, Visitor, visit
from graphql.validation import ValidationRule

MAX_DEPTH = 10
MAX_FIELDS = 200
# Fragments that only spread other fragments add no fields; this bounds the walk itself.
_MAX_WALK = 5_000


@dataclass
class _Tally:
    fields: int = 0
    walked: int = 0
    depth: int = 0
    seen: set[str] = field(default_factory=set)

    @property
    def exceeded(self) -> bool:
        return self.fields > MAX_FIELDS or self.depth > MAX_DEPTH or self.walked > _MAX_WALK


class QueryLimits(ValidationRule):
    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        tally = _Tally()
        self._walk(node.selection_set, 1, tally, frozenset())
        if tally.depth > MAX_DEPTH:
            self.report_error(
                GraphQLError(f"The query is nested deeper than {MAX_DEPTH} levels", node)
            )
        elif tally.fields > MAX_FIELDS or tally.walked > _MAX_WALK:
            self.report_error(
                GraphQLError(f"The query selects more than {MAX_FIELDS} fields", node)
            )

    def _walk(
        self,
        selection_set: SelectionSetNode | None,
        depth: int,
        tally: _Tally,
        fragments: frozenset[str],
    ) -> None:
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if tally.exceeded:
                return
            tally.walked += 1
            if isinstance(selection, FieldNode):
                if selection.name.value.startswith("__"):
                    continue
                tally.fields += 1
                tally.depth = max(tally.depth, depth)
                self._walk(selection.selection_set, depth + 1, tally, fragments)
            elif isinstance(selection, InlineFragmentNode):
                self._walk(selection.selection_set, depth, tally, fragments)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.context.get_fragment(name)
                # Cycles are reported by the standard NoFragmentCycles rule.
                if fragment is not None and name not in fragments:
                    self._walk(fragment.selection_set, depth, tally, fragments | {name})


# ---------------------------------------------------------------------------- input fields

# graphql-core's wording: "Variable '$input' has invalid value at .filter.actions[0]: …",
# "… to include required field 'fromTime' …", "… not to include unknown field 'x' …".
_VARIABLE_NAME = re.compile(r"^Variable '\$([A-Za-z_][A-Za-z0-9_]*)'")
_VARIABLE_PATH = re.compile(r"^Variable '\$[^']+' has invalid value at ((?:\.\w+|\[\d+\])+)")
_NAMED_FIELD = re.compile(r"(?:required|unknown) field '([A-Za-z_][A-Za-z0-9_]*)'")
_INDEX = re.compile(r"\[\d+\]")


def _join(parts: list[str]) -> str | None:
    cleaned = [p for p in parts if p]
    return ".".join(cleaned) if cleaned else None


def input_field_of(error: GraphQLError, document: DocumentNode | None) -> str | None:
    """The input field a request-level error is about, named as clients write it.

    ``input.filter.actions`` is reported as ``filter.actions``: the argument that wraps a
    mutation's input is not something a user filled in. Other arguments lead the path
    (``first``, ``filter.actions``), whether the bad value came inline or in a variable.
    """
    message = error.message
    named = _NAMED_FIELD.search(message)
    if message.startswith("Variable '$"):
        found = _VARIABLE_PATH.search(message)
        inner = _INDEX.sub("", found.group(1)).split(".") if found else []
        variable = _VARIABLE_NAME.match(message)
        outer = _where_used(document, variable.group(1)) if variable and document else []
        return _join([*outer, *inner, named.group(1) if named else ""])
    if document is None or not error.nodes:
        return None
    target = error.nodes[0]
    finder = _PathFinder(lambda node: node is target)
    visit(document, finder)
    if not finder.found:
        return None
    parts = finder.path()
    if named and (not parts or parts[-1] != named.group(1)):
        parts.append(named.group(1))
    return _join(parts)


def _where_used(document: DocumentNode, variable: str) -> list[str]:
    """The argument and input fields the variable ``$variable`` is first passed to."""

    def is_use(node: Node) -> bool:
        return isinstance(node, VariableNode) and node.name.value == variable

    # The definition ``$first: Int`` names the variable too; only a use says where it goes.
    finder = _PathFinder(is_use, skip_definitions=True)
    visit(document, finder)
    return finder.path() if finder.found else []


class _PathFinder(Visitor):
    def __init__(self, target: Callable[[Node], bool], *, skip_definitions: bool = False) -> None:
        super().__init__()
        self.target = target
        self.skip_definitions = skip_definitions
        self.found = False
        self.object_fields: list[str] = []
        self.argument: str | None = None

    def enter(self, node: Any, _key: Any, parent: Any, _path: Any, ancestors: Any) -> Any:
        if self.skip_definitions and isinstance(node, VariableDefinitionNode):
            return SKIP
        if not isinstance(node, Node) or not self.target(node):
            return None
        chain = [a for a in (*ancestors, parent, node) if isinstance(a, Node)]
        self.found = True
        self.object_fields = [n.name.value for n in chain if isinstance(n, ObjectFieldNode)]
        arguments = [n.name.value for n in chain if isinstance(n, ArgumentNode)]
        self.argument = arguments[-1] if arguments else None
        return BREAK

    def path(self) -> list[str]:
        lead = [self.argument] if self.argument and self.argument != "input" else []
        return [*lead, *self.object_fields]
