"""Bounds on what one GraphQL request may ask for, and where a bad input value sits.

``QueryLimits`` rejects operations nested deeper than ``MAX_DEPTH`` or selecting more than
``MAX_FIELDS`` fields (fragments expanded, aliases counted), before anything executes.
Introspection (``__schema``, ``__type``) is left to graphql-core's own introspection depth
rule so that schema explorers keep working; ``query_cost`` prices it like everything else.

``query_cost`` estimates what an operation will make the server do, before it runs:

- every selected field costs 1, aliases and fragment spreads included; fields whose values
  can be large weigh more (``FIELD_WEIGHTS``: SCIM bodies and audit metadata as much as a
  hundred plain fields, user agents and error messages ten);
- a connection multiplies the cost of its selection by its ``first`` (variables resolved;
  50 when omitted, never more than the largest page a listing returns);
- any other list of objects multiplies its selection by ``LIST_SIZE``;
- introspection is priced exactly: the schema is fixed, so the walk follows the very lists
  graphql-core would return (``{ __schema { types { fields { name } } } }`` costs one per
  type and one per field of each type), remembering what a selection costs on each schema
  element so that a fragment spread many times is walked once.

An operation over ``MAX_COST`` is refused with ``QUERY_TOO_COMPLEX``. Each step of the walk
adds at least one to the cost, so the walk stops after ``MAX_COST`` steps: checking a query
costs no more than the largest query it lets through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    Node,
    ObjectFieldNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_introspection_type,
    value_from_ast_untyped,
)
from graphql.execution.values import VariableValues, get_argument_values
from graphql.language import BREAK, SKIP, Visitor, visit
from graphql.language.visitor import VisitorAction
from graphql.validation import ValidationRule

from logexport.entries import MAX_PAGE_SIZE

MAX_DEPTH = 10
MAX_FIELDS = 200
# Fragments that only spread other fragments add no fields; this bounds the walk itself.
_MAX_WALK = 5_000
DEFAULT_PAGE_SIZE = 50


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
    def enter_operation_definition(self, node: OperationDefinitionNode, *_: object) -> None:
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


# ---------------------------------------------------------------------------- cost

MAX_COST = 25_000
LIST_SIZE = 10
LARGE_JSON = 100
LONG_TEXT = 10
# Values stored from the outside world and bounded only by the storage limits (64 KiB of
# JSON, 10,000 characters of text), and a field whose every value writes a row.
FIELD_WEIGHTS: dict[tuple[str, str], int] = {
    ("ScimEvent", "requestBody"): LARGE_JSON,
    ("ScimEvent", "responseBody"): LARGE_JSON,
    ("AuditLogEntry", "metadata"): LARGE_JSON,
    ("ScimEvent", "userAgent"): LONG_TEXT,
    ("ScimEvent", "errorMessage"): LONG_TEXT,
    ("AuditLogEntry", "userAgent"): LONG_TEXT,
    ("LogExport", "filter"): LONG_TEXT,
    ("LogExport", "manifest"): LONG_TEXT,
    ("LogExport", "downloadUrl"): LONG_TEXT,
    ("LogStream", "filter"): LONG_TEXT,
    ("LogStream", "lastError"): LONG_TEXT,
    ("LogStreamDelivery", "error"): LONG_TEXT,
}
# Costs beyond this are not worth spelling out digit by digit.
_SHOWN_COST_CEILING = 10**12


def too_complex_message(cost: int | None, limit: int = MAX_COST) -> str:
    """Why a query of estimated ``cost`` is refused (None: more than ``limit``)."""
    if cost is None or cost > _SHOWN_COST_CEILING:
        shown = f"more than {limit if cost is None else _SHOWN_COST_CEILING:,}"
    else:
        shown = f"{cost:,}"
    return (
        f"The query is too expensive: its cost is {shown} and the limit is {limit:,}. "
        "Select fewer fields, fewer aliases or smaller pages (first)."
    )


def query_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, object] | None = None,
    *,
    limit: int = MAX_COST,
) -> int | None:
    """The estimated cost of the operation that would run, or None when over ``limit``.

    None means the walk stopped early: the cost is known to exceed ``limit``, not by how
    much. Without ``operation_name`` every operation in the document is priced and the
    dearest counts. The document need not be valid: unknown fields cost 1, unknown
    fragments nothing, and a fragment that spreads itself stops at the second spread.
    """
    walk = _CostWalk(schema, document, variables or {}, limit)
    costs = []
    try:
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            if operation_name is not None and (
                definition.name is None or definition.name.value != operation_name
            ):
                continue
            walk.defaults = {
                v.variable.name.value: v.default_value
                for v in definition.variable_definitions or ()
            }
            root = schema.get_root_type(definition.operation)
            costs.append(walk.selections(definition.selection_set, root, None))
    except (_OverLimit, RecursionError):
        return None
    return max(costs, default=0)


class _OverLimit(Exception):
    pass


@dataclass(frozen=True)
class _Info:
    """What graphql-core's introspection resolvers read from their ``info`` argument."""

    schema: GraphQLSchema


class _CostWalk:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, object],
        limit: int,
    ) -> None:
        self.schema = schema
        self.info = _Info(schema)
        self.variables = variables
        self.defaults: dict[str, ValueNode | None] = {}
        self.limit = limit
        self.steps = 0
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # (selection set, schema element) -> cost; the element is kept so that its id stays
        # unique while the walk lasts.
        self.memo: dict[tuple[int, int], tuple[int, object]] = {}
        self.spreading: set[str] = set()

    def selections(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType | None,
        source: object,
    ) -> int:
        """The cost of ``selection_set`` on ``parent`` (``source``: the introspected element)."""
        if selection_set is None:
            return 0
        key = (id(selection_set), id(source))
        if key in self.memo:
            return self.memo[key][0]
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, source)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self._named(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, inner, source)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in self.spreading:
                    continue  # reported by validation: unknown fragment, or a cycle
                self.spreading.add(name)
                try:
                    inner = self._named(fragment.type_condition.name.value)
                    total += self.selections(fragment.selection_set, inner, source)
                finally:
                    self.spreading.discard(name)
        self.memo[key] = (total, source)
        return total

    def field(self, node: FieldNode, parent: GraphQLNamedType | None, source: object) -> int:
        self.steps += 1
        if self.steps > self.limit:
            # Every step adds at least 1: the cost is over the limit already.
            raise _OverLimit
        name = node.name.value
        definition = self._definition(parent, name)
        if definition is None:
            return 1 + self.selections(node.selection_set, None, None)
        target = get_named_type(definition.type)
        if not isinstance(target, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
            return FIELD_WEIGHTS.get((parent.name, name), 1) if parent is not None else 1
        if name in ("__schema", "__type") or (parent is not None and is_introspection_type(parent)):
            return 1 + self._introspected(node, definition, target, source)
        weight = FIELD_WEIGHTS.get((parent.name, name), 1) if parent is not None else 1
        inner = self.selections(node.selection_set, target, None)
        if "first" in definition.args:
            return weight + self._page_size(node, definition) * inner
        if isinstance(get_nullable_type(definition.type), GraphQLList) and not (
            parent is not None and parent.name.endswith("Connection")
        ):
            # A connection's edges are already multiplied by its page size.
            return weight + LIST_SIZE * inner
        return weight + inner

    def _introspected(
        self, node: FieldNode, definition: GraphQLField, target: GraphQLNamedType, source: object
    ) -> int:
        """The cost of the selection below an introspection field, for what it returns."""
        try:
            arguments = get_argument_values(
                definition, node, VariableValues(sources={}, coerced=dict(self.variables))
            )
            value = (
                definition.resolve(source, self.info, **arguments) if definition.resolve else None
            )
        except Exception:
            # Execution refuses the same arguments, or finds nothing: no selection runs.
            return 0
        if value is None:
            return 0
        items = value if isinstance(get_nullable_type(definition.type), GraphQLList) else [value]
        return sum(self.selections(node.selection_set, target, item) for item in items)

    def _page_size(self, node: FieldNode, definition: GraphQLField) -> int:
        argument = next((a for a in node.arguments or () if a.name.value == "first"), None)
        value: object = definition.args["first"].default_value
        if argument is not None:
            if isinstance(argument.value, VariableNode):
                name = argument.value.name.value
                if name in self.variables:
                    value = self.variables[name]
                elif (default := self.defaults.get(name)) is not None:
                    value = value_from_ast_untyped(default, {})
            else:
                value = value_from_ast_untyped(argument.value, {})
        if isinstance(value, bool) or not isinstance(value, int):
            # Refused when it executes; until then, priced as the default page.
            value = DEFAULT_PAGE_SIZE
        # A page never holds more than MAX_PAGE_SIZE: a larger first is refused anyway.
        return max(1, min(int(value), MAX_PAGE_SIZE))

    def _definition(self, parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
        if name == "__typename":
            return TypeNameMetaFieldDef
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            found: GraphQLField | None = parent.fields.get(name)
            return found
        return None

    def _named(self, name: str) -> GraphQLNamedType | None:
        return self.schema.get_type(name)


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

    def enter(
        self,
        node: object,
        _key: str | int | None,
        parent: Node | Collection[Node] | None,
        _path: list[str | int],
        ancestors: list[Node | Collection[Node]],
    ) -> VisitorAction:
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
