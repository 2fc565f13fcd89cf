"""The job store's schema: its migrations, in order (`PRAGMA user_version` is the last applied),
and the SQL its tallies are kept with. torchship.state opens the store and runs them.
"""

from __future__ import annotations

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            spec TEXT NOT NULL CHECK (json_valid(spec)),
            lock_hash TEXT,
            site TEXT,
            placement TEXT CHECK (placement IS NULL OR json_valid(placement)),
            state TEXT NOT NULL,
            handle TEXT,
            exit_code INTEGER,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX jobs_state ON jobs(state)",
        "CREATE INDEX jobs_site ON jobs(site)",
        """CREATE TABLE job_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            state TEXT NOT NULL,
            at REAL NOT NULL,
            detail TEXT CHECK (detail IS NULL OR json_valid(detail))
        )""",
        "CREATE INDEX job_events_job ON job_events(job_id, id)",
    ),
    2: (  # who is applying a job that has no handle yet, and until when (see JobStore.claim)
        "ALTER TABLE jobs ADD COLUMN claimed_by TEXT",
        "ALTER TABLE jobs ADD COLUMN claimed_until REAL",
    ),
    # The name of the site a job was placed on. Until schema 2, `site` held the site's kind
    # (local, docker, kubernetes, skypilot), and the name only the placement record, when the
    # job was placed with --site auto; a job asked for with --site KIND ran on that kind's
    # implicit site, which that name still names. `site` stays, as it was, for the record.
    3: (
        "ALTER TABLE jobs ADD COLUMN site_name TEXT",
        "UPDATE jobs SET site_name = CASE WHEN json_type(placement, '$.site') = 'text'"
        " THEN json_extract(placement, '$.site') ELSE site END",
        "CREATE INDEX jobs_site_name ON jobs(site_name)",
    ),
}


def _placed(row: str) -> str:
    return f"COALESCE(json_extract({row}placement, '$.site'), {row}site_name, {row}site, '')"


def closed_usd(row: str) -> str:
    """What a finished (or lost) job accrued: the placement's usd_per_hour × submitted to end."""
    return (f"(CASE WHEN {row}state IN ('succeeded', 'failed', 'cancelled', 'lost') THEN"
            f" COALESCE(json_extract({row}placement, '$.usd_per_hour'), 0)"
            f" * MAX(0, {row}updated_at - {row}created_at) / 3600.0 ELSE 0 END)")  # fmt: skip


def group_columns(row: str) -> str:
    """A job's group in the tallies: state, site, placed site, placement decision."""
    return (f"{row}state, COALESCE({row}site_name, {row}site, ''), {_placed(row)},"
            f" COALESCE(json_extract({row}placement, '$.decision'), 'asked')")  # fmt: skip


_TALLY_ADD = (
    f"INSERT INTO job_tallies VALUES ({group_columns('NEW.')}, 1, {closed_usd('NEW.')})"
    " ON CONFLICT DO UPDATE SET jobs = jobs + 1, usd_closed = usd_closed + excluded.usd_closed;"
)
# Schema 4: every question `status`, `logs`, `cancel` and the exporter ask is an index range,
# whatever the history: (state, id) and (site_name, id) give the newest jobs of a state or site
# in order; created_at the jobs since a time. The exporter's counts are kept by triggers in
# job_tallies, in the transaction of each change (a deleted row, an archived job, still
# counts: the counts are of every job ever submitted, as before). recheck_at: when a lost job
# is next asked about (NULL: at the next reconcile; NEVER: not any more). archived_keys: the
# keys of jobs moved to the archive, so a retry of an archived job's key is not a new job.
MIGRATIONS[4] = (
    "UPDATE jobs SET site_name = site WHERE site_name IS NULL",
    # `site` (the kind, before schema 3) is no longer written nor asked: its index only cost
    # every write a page
    "DROP INDEX jobs_site",
    "DROP INDEX jobs_state",
    "CREATE INDEX jobs_state ON jobs(state, id)",
    "DROP INDEX jobs_site_name",
    "CREATE INDEX jobs_site_name ON jobs(site_name, id)",
    "CREATE INDEX jobs_created ON jobs(created_at)",
    # the jobs that may move to the archive, by their last change (torchship.store_archive)
    "CREATE INDEX jobs_finished ON jobs(updated_at)"
    " WHERE state IN ('succeeded', 'failed', 'cancelled', 'lost')",
    "ALTER TABLE jobs ADD COLUMN recheck_at REAL",
    """CREATE TABLE job_tallies (
        state TEXT NOT NULL, site TEXT NOT NULL, placed TEXT NOT NULL, decision TEXT NOT NULL,
        jobs INTEGER NOT NULL, usd_closed REAL NOT NULL,
        PRIMARY KEY (state, site, placed, decision)
    ) WITHOUT ROWID""",
    f"INSERT INTO job_tallies SELECT {group_columns('')}, COUNT(*), SUM({closed_usd('')})"
    " FROM jobs GROUP BY 1, 2, 3, 4",
    f"CREATE TRIGGER jobs_tally_insert AFTER INSERT ON jobs BEGIN {_TALLY_ADD} END",
    "CREATE TRIGGER jobs_tally_update AFTER UPDATE OF state, site, site_name, placement,"
    " created_at, updated_at ON jobs BEGIN"
    f" UPDATE job_tallies SET jobs = jobs - 1, usd_closed = usd_closed - {closed_usd('OLD.')}"
    " WHERE (state, site, placed, decision) = (" + group_columns("OLD.") + f"); {_TALLY_ADD} END",
    "CREATE TABLE archived_keys (key TEXT PRIMARY KEY, id TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE store_meta (name TEXT PRIMARY KEY, value REAL) WITHOUT ROWID",
)
