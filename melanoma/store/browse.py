"""Browsing one job's results a page at a time: validated sort and filters, keyset pagination.

A job may hold 100,000 images, so no page loads the whole job and none uses OFFSET: a page starts
after the last row of the previous one (its *cursor*), and the query walks an index from there.
Sorting by a probability puts the rows that have none (pending and failed images) after every
scored row, ordered by id; the two parts are queried separately so that each walks an index.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, Select, func, literal, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS, parse_class, prob_column
from melanoma.store.schema import Prediction, Review

PAGE_SIZE = 60
SORTS: tuple[str, ...] = (*PROB_COLUMNS, "path")
Order = Literal["desc", "asc"]
# A row's place in an ordering: (has no value, value, id).
Key = tuple[bool, Any, int]


class BadView(ValueError):
    """A sort, filter or cursor value that is not one of the accepted ones (an HTTP 400)."""


@dataclass(frozen=True)
class View:
    """How a job's images are shown: sort column and direction, and the filters."""

    sort: str = "p_melanoma"
    order: Order = "desc"
    predicted: str | None = None  # predicted class
    flagged: bool = False  # melanoma flag set (P(melanoma) at or above the version's operating point)
    errors: bool = False  # failed images only
    unfamiliar: bool = False  # images unlike the model version's validation images only
    min_prob: float | None = None  # minimum probability of the sorted class (of melanoma when sorting by path)
    reviewed: str | None = None  # "yes": images with a confirmed diagnosis; "no": scored images without one

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> View:
        """A view from query parameters; anything unknown or malformed raises :class:`BadView`."""
        known = {"sort", "order", "predicted", "flagged", "errors", "unfamiliar", "min_prob", "reviewed", "after"}
        unknown = set(params) - known
        if unknown:
            raise BadView(f"unknown parameter {sorted(unknown)[0]!r}")
        sort = params.get("sort") or cls.sort
        if sort not in SORTS:
            raise BadView(f"sort must be one of {', '.join(SORTS)}")
        order = params.get("order") or ("asc" if sort == "path" else "desc")
        if order not in ("asc", "desc"):
            raise BadView("order must be asc or desc")
        predicted = None
        if params.get("predicted"):
            try:
                predicted = parse_class(params["predicted"])
            except ValueError as exc:
                raise BadView(str(exc)) from None
        min_prob = None
        if params.get("min_prob"):
            try:
                min_prob = float(params["min_prob"])
            except ValueError:
                raise BadView("min_prob must be a number from 0 to 1") from None
            if not 0.0 <= min_prob <= 1.0:
                raise BadView("min_prob must be a number from 0 to 1")
        return cls(
            sort=sort,
            order=order,  # type: ignore[arg-type]
            predicted=predicted,
            flagged=_flag(params, "flagged"),
            errors=_flag(params, "errors"),
            unfamiliar=_flag(params, "unfamiliar"),
            min_prob=min_prob,
            reviewed=_reviewed(params),
        )

    def params(self) -> dict[str, str]:
        """The query parameters that differ from the defaults."""
        out: dict[str, str] = {}
        if self.sort != View.sort:
            out["sort"] = self.sort
        if self.order != ("asc" if self.sort == "path" else "desc"):
            out["order"] = self.order
        if self.predicted:
            out["predicted"] = prob_column(self.predicted)[2:]
        if self.flagged:
            out["flagged"] = "1"
        if self.errors:
            out["errors"] = "1"
        if self.unfamiliar:
            out["unfamiliar"] = "1"
        if self.min_prob is not None:
            out["min_prob"] = f"{self.min_prob:g}"
        if self.reviewed:
            out["reviewed"] = self.reviewed
        return out

    def query(self, **extra: str) -> str:
        """``?sort=…&…`` for links that keep this view (empty when nothing differs)."""
        params = {**self.params(), **extra}
        return "?" + urlencode(params) if params else ""

    @property
    def sort_class(self) -> str | None:
        """The class whose probability orders the rows (None when sorting by path)."""
        return None if self.sort == "path" else CLASS_NAMES[PROB_COLUMNS.index(self.sort)]

    def column(self) -> InstrumentedAttribute[Any]:
        return Prediction.image_path if self.sort == "path" else getattr(Prediction, self.sort)

    def conditions(self, job_id: str) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [Prediction.job_id == job_id]
        if self.predicted:
            conds.append(Prediction.predicted_class == self.predicted)
        if self.flagged:
            conds.append(Prediction.melanoma_flag.is_(True))
        if self.errors:
            conds.append(Prediction.status == "error")
        if self.unfamiliar:
            conds.append(Prediction.unfamiliar.is_(True))
        if self.min_prob is not None:
            prob = getattr(Prediction, prob_column(self.sort_class or "melanoma"))
            conds.append(prob >= self.min_prob)
        if self.reviewed == "yes":
            conds.append(Prediction.sha256.in_(select(Review.sha256)))
        elif self.reviewed == "no":
            conds += [Prediction.status == "ok", Prediction.sha256.not_in(select(Review.sha256))]
        return conds


def _reviewed(params: Mapping[str, str]) -> str | None:
    value = params.get("reviewed", "")
    if value not in ("", "yes", "no"):
        raise BadView("reviewed must be yes or no")
    return value or None


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "")
    if value not in ("", "0", "1", "on"):
        raise BadView(f"{name} must be 1 or 0")
    return value in ("1", "on")


def encode_cursor(key: Key) -> str:
    """An opaque cursor for the row with ``key`` (the place a page ends)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str, view: View) -> Key:
    """The key a cursor stands for; :class:`BadView` for anything this module did not make."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadView("malformed cursor") from None
    if not (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], bool) and type(raw[2]) is int):
        raise BadView("malformed cursor")
    null, value, row_id = raw
    if null:
        ok = value is None
    elif view.sort == "path":
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    if not ok:
        raise BadView("malformed cursor")
    return (null, value, row_id)


def key_of(row: Prediction, view: View) -> Key:
    """Where ``row`` sits in ``view``'s ordering."""
    value = getattr(row, "image_path" if view.sort == "path" else view.sort)
    return (value is None, value, row.id)


def _valued(view: View, base: Select[Any], after: Key | None, backwards: bool) -> Select[Any]:
    col = view.column()
    descending = (view.order == "desc") != backwards
    q = base.where(col.is_not(None))
    if after is not None:
        _, value, row_id = after
        # A row-value comparison, which both SQLite and PostgreSQL turn into one index range.
        key, bound = tuple_(col, Prediction.id), tuple_(literal(value), literal(row_id))
        q = q.where(key < bound if descending else key > bound)
    order = (col.desc(), Prediction.id.desc()) if descending else (col.asc(), Prediction.id.asc())
    return q.order_by(*order)


def _valueless(base: Select[Any], after: Key | None, backwards: bool, col: Any) -> Select[Any]:
    q = base.where(col.is_(None))
    if after is not None and after[0]:
        q = q.where(Prediction.id < after[2] if backwards else Prediction.id > after[2])
    return q.order_by(Prediction.id.desc() if backwards else Prediction.id.asc())


def seek(
    session: Session, job_id: str, view: View, after: Key | None, limit: int, backwards: bool = False
) -> list[Prediction]:
    """Up to ``limit`` rows after ``after`` in ``view``'s ordering (from the start when None), or
    with ``backwards`` the rows before it, nearest first."""
    base = select(Prediction).where(*view.conditions(job_id))
    col = view.column()
    rows: list[Prediction] = []
    # The ordering is: rows with a value (sorted), then rows without one (by id).
    parts: Sequence[str] = ("valueless", "valued") if backwards else ("valued", "valueless")
    for part in parts:
        if len(rows) >= limit:
            break
        if part == "valued":
            if view.errors and view.sort != "path":
                continue  # failed images have no probabilities
            if after is not None and after[0] and not backwards:
                continue  # already past every valued row
            start = after if after is not None and not after[0] else None
            q = _valued(view, base, start, backwards)
        else:
            if after is not None and not after[0] and backwards:
                continue  # before a valued row there is no valueless one
            q = _valueless(base, after, backwards, col)
        rows += session.scalars(q.limit(limit - len(rows))).all()
    return rows


@dataclass(frozen=True)
class Page:
    """One page of a job's grid."""

    rows: list[Prediction]
    next_cursor: str | None
    matching: int


def page(session: Session, job_id: str, view: View, cursor: str | None, size: int = PAGE_SIZE) -> Page:
    """The page of ``size`` rows after ``cursor`` and how many rows match the filters in all."""
    after = decode_cursor(cursor, view) if cursor else None
    rows = seek(session, job_id, view, after, size + 1)
    more = len(rows) > size
    rows = rows[:size]
    matching = session.scalar(select(func.count()).select_from(Prediction).where(*view.conditions(job_id))) or 0
    return Page(rows, encode_cursor(key_of(rows[-1], view)) if more and rows else None, matching)


def neighbours(session: Session, row: Prediction, view: View) -> tuple[Prediction | None, Prediction | None]:
    """The rows just before and just after ``row`` in ``view`` (for previous / next links)."""
    key = key_of(row, view)
    before = seek(session, row.job_id, view, key, 1, backwards=True)
    after = seek(session, row.job_id, view, key, 1)
    return (before[0] if before else None, after[0] if after else None)
