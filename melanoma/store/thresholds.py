"""Local operating points: a clinic's own melanoma flag threshold per model version, chosen on its
reviewed cases (``melanoma threshold set``) and applied by the worker to that clinic's images.

A scope is ``site NAME`` (the images of jobs filed under that site) or ``root PATH`` (images under
that folder). A site's point wins over a folder's; of folders, the deepest wins; with none, the
version's own operating point (chosen on its validation images) applies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from melanoma.core.errors import UserError
from melanoma.store.reviews import audit
from melanoma.store.schema import Job, OperatingPoint

VERSION_SCOPE = "version"


def scope_of(site: str | None = None, root: str | None = None) -> str:
    """``site NAME`` or ``root /absolute/path`` (exactly one of them)."""
    if (site is None) == (root is None):
        raise UserError("give a site (--site NAME) or a folder (--root PATH), not both")
    if site is not None:
        if not site.strip():
            raise UserError("the site name is empty")
        return f"site {site.strip()}"
    return f"root {os.path.abspath(str(root)).rstrip('/') or '/'}"


def set_point(
    session: Session,
    scope: str,
    version: str,
    threshold: float,
    target_sensitivity: float,
    cases: int,
    melanomas: int,
    set_by: str,
) -> OperatingPoint:
    """Store (or replace) ``scope``'s threshold for ``version``, with an audit event."""
    old = session.scalars(
        select(OperatingPoint).where(OperatingPoint.scope == scope, OperatingPoint.model_version == version)
    ).first()
    if old is not None:
        session.delete(old)
        session.flush()
    point = OperatingPoint(
        scope=scope,
        model_version=version,
        threshold=float(threshold),
        target_sensitivity=float(target_sensitivity),
        cases=cases,
        melanomas=melanomas,
        set_by=set_by,
    )
    session.add(point)
    audit(
        session,
        set_by,
        "threshold.set",
        scope,
        version=version,
        threshold=float(threshold),
        target_sensitivity=float(target_sensitivity),
        cases=cases,
        melanomas=melanomas,
        previous=None if old is None else old.threshold,
    )
    return point


def clear_point(session: Session, scope: str, version: str, actor: str) -> bool:
    """Remove ``scope``'s threshold for ``version``; False when there was none."""
    gone = session.execute(
        delete(OperatingPoint).where(OperatingPoint.scope == scope, OperatingPoint.model_version == version)
    )
    removed = bool(getattr(gone, "rowcount", 0))
    if removed:
        audit(session, actor, "threshold.clear", scope, version=version)
    return removed


def points(session: Session, version: str | None = None) -> list[OperatingPoint]:
    """Stored operating points (of ``version``), by scope."""
    q = select(OperatingPoint).order_by(OperatingPoint.scope, OperatingPoint.model_version)
    if version is not None:
        q = q.where(OperatingPoint.model_version == version)
    return list(session.scalars(q))


@dataclass
class Thresholds:
    """One version's thresholds, resolved per image (what the worker applies)."""

    own: float | None
    sites: dict[str, float]
    roots: list[tuple[str, float]]  # deepest first
    job_sites: dict[str, str | None]

    def resolve(self, job_id: str, path: str) -> tuple[float | None, str | None]:
        """The threshold for an image of ``job_id`` at ``path``, and whose it is."""
        site = self.job_sites.get(job_id)
        if site is not None and site in self.sites:
            return self.sites[site], f"site {site}"
        for root, threshold in self.roots:
            if path.startswith(root.rstrip("/") + "/"):
                return threshold, f"root {root}"
        return self.own, None if self.own is None else VERSION_SCOPE


def for_version(session: Session, version: str, own: float | None, job_ids: set[str]) -> Thresholds:
    """The thresholds that apply to ``version``'s scoring of these jobs' images."""
    sites: dict[str, float] = {}
    roots: list[tuple[str, float]] = []
    for p in points(session, version):
        kind, _, name = p.scope.partition(" ")
        if kind == "site":
            sites[name] = p.threshold
        elif kind == "root":
            roots.append((name, p.threshold))
    roots.sort(key=lambda r: -len(r[0]))
    job_sites = {job: site for job, site in session.execute(select(Job.id, Job.site).where(Job.id.in_(job_ids)))}
    return Thresholds(own, sites, roots, job_sites)
