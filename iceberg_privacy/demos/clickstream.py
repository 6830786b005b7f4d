"""The synthetic clickstreams of the demo and the benchmarks: deterministic (seeded), numpy-vectorized.

One generator module, two table shapes of page events by users with heavy-tailed activity. Both
draw their user ids with :func:`uuid4_strings`; each keeps its own sequence of random draws, so a
seed gives the same rows as it always has (the numbers in docs/benchmarks.md and the demo's
printed results depend on them).

:func:`make_clickstream` (the benchmarks): 21 flat columns. The stream is time ordered and cut into
``num_files`` windows of exactly ``rows_per_file`` rows: file ``k`` holds time window ``k``. Every
user has a heavy-tailed number of sessions (discrete power law, exponent 2.3, capped at 60); every
session starts at a uniformly random time and has a geometric number of events (mean 8) a few
seconds apart, so a user usually appears in a few files with several events each, and 99% of users
appear in at most 31 files (Adobe's published distribution for identity lookups). Session-level
attributes (device, browser, ip, referrer, campaign, ...) are constant within a session, as in real
clickstreams.

:func:`clickstream` (the README's main job, ``iceberg-privacy demo``): ``days`` days of
``events_per_day`` events in sessions of 8, Zipf-distributed user activity, and an Adobe-shaped
``identities`` map (an email and a CRM id per user) for nested identity lookups; its Iceberg schema
is :data:`DEMO_SCHEMA`.

Typical use::

    from iceberg_privacy.demos.clickstream import clickstream_schema, make_clickstream

    data = make_clickstream(num_files=20, rows_per_file=2_000, seed=7)
    table = catalog.create_table("db.clicks", clickstream_schema())
    # data.table is a pyarrow.Table; data.file_of_row[i] is the window (file) of row i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

SESSIONS_EXPONENT = 2.3
"""Power-law exponent of sessions per user (P(k) ~ k^-2.3)."""
MAX_SESSIONS = 60
"""Cap on sessions per user (bots and crawlers are usually filtered upstream)."""
MEAN_EVENTS_PER_SESSION = 8.0
MEAN_EVENT_GAP_SECONDS = 20.0
WINDOW_SECONDS = 3600
START_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z

_COLUMNS: list[tuple[str, pa.DataType, type]] = [
    ("event_time", pa.timestamp("us", tz="UTC"), TimestamptzType),
    ("event_id", pa.int64(), LongType),
    ("user_id", pa.string(), StringType),
    ("session_id", pa.string(), StringType),
    ("event_type", pa.string(), StringType),
    ("page_url", pa.string(), StringType),
    ("referrer", pa.string(), StringType),
    ("country", pa.string(), StringType),
    ("language", pa.string(), StringType),
    ("device", pa.string(), StringType),
    ("browser", pa.string(), StringType),
    ("os", pa.string(), StringType),
    ("app_version", pa.string(), StringType),
    ("screen_resolution", pa.string(), StringType),
    ("ip", pa.string(), StringType),
    ("campaign", pa.string(), StringType),
    ("item_id", pa.int64(), LongType),
    ("quantity", pa.int32(), IntegerType),
    ("price", pa.float64(), DoubleType),
    ("duration_ms", pa.int32(), IntegerType),
    ("is_mobile", pa.bool_(), BooleanType),
]

_EVENT_TYPES = ["page_view", "click", "scroll", "search", "add_to_cart", "remove_from_cart", "checkout",
                "purchase", "login", "video_play"]
_EVENT_P = [0.42, 0.2, 0.12, 0.07, 0.06, 0.01, 0.03, 0.02, 0.04, 0.03]
_COUNTRIES = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "ES", "IT", "NL", "MX", "AU", "PL", "SE", "KR",
              "TR", "CH", "BE", "AT"]
_LANG = {"US": "en-US", "DE": "de-DE", "GB": "en-GB", "FR": "fr-FR", "IN": "en-IN", "BR": "pt-BR", "JP": "ja-JP",
         "CA": "en-CA", "ES": "es-ES", "IT": "it-IT", "NL": "nl-NL", "MX": "es-MX", "AU": "en-AU", "PL": "pl-PL",
         "SE": "sv-SE", "KR": "ko-KR", "TR": "tr-TR", "CH": "de-CH", "BE": "fr-BE", "AT": "de-AT"}
_DEVICES = ["desktop", "mobile", "tablet"]
_DEVICE_P = [0.45, 0.47, 0.08]
_BROWSERS = ["Chrome", "Safari", "Firefox", "Edge", "Samsung Internet", "Opera"]
_BROWSER_P = [0.62, 0.2, 0.07, 0.06, 0.03, 0.02]
_OS = {"desktop": ["Windows", "macOS", "Linux", "ChromeOS"], "mobile": ["Android", "iOS"], "tablet": ["iPadOS", "Android"]}
_RESOLUTIONS = {"desktop": ["1920x1080", "2560x1440", "1366x768", "1440x900", "3840x2160"],
                "mobile": ["390x844", "412x915", "360x800", "430x932"], "tablet": ["820x1180", "768x1024", "800x1280"]}
_REFERRERS = ["https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/", "https://www.facebook.com/",
              "https://t.co/", "https://www.instagram.com/", "https://news.ycombinator.com/", "https://www.reddit.com/",
              "https://mail.example.net/", "https://partner.example.org/deals"]
_CAMPAIGNS = ["spring_sale", "newsletter_w12", "retarget_cart", "brand_search", "influencer_q1", "black_friday",
              "app_install", "loyalty_2x"]
_SECTIONS = ["home", "search", "category/shoes", "category/outdoor", "category/electronics", "category/books",
             "category/kitchen", "product", "cart", "checkout", "account", "help", "blog"]


def clickstream_arrow_schema() -> pa.Schema:
    """The Arrow schema of :func:`make_clickstream` tables (21 columns, all nullable)."""
    return pa.schema([pa.field(name, typ, nullable=True) for name, typ, _ in _COLUMNS])


def clickstream_schema() -> Schema:
    """The matching Iceberg schema (field ids 1..21, all optional)."""
    return Schema(*[NestedField(i + 1, name, ice(), required=False) for i, (name, _, ice) in enumerate(_COLUMNS)])


def uuid4_strings(rng: np.random.Generator, n: int) -> pa.StringArray:
    """``n`` random version-4 UUIDs as canonical lowercase strings, built without Python loops."""
    b = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    hexchars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hex32 = np.stack([hexchars[b >> 4], hexchars[b & 15]], axis=2).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    cols = np.r_[0:8, 9:13, 14:18, 19:23, 24:36]
    out[:, cols] = hex32
    offsets = np.arange(0, 36 * n + 1, 36, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out.tobytes())])


def _pick(pool: list[str], idx: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Strings of ``pool`` at ``idx`` (null where ``mask``)."""
    return pa.array(pool, pa.string()).take(pa.array(idx.astype(np.int32), mask=mask))


def _sessions_per_user(rng: np.random.Generator, n: int) -> np.ndarray:
    """Discrete power law P(k) ~ k^-SESSIONS_EXPONENT on 1..MAX_SESSIONS."""
    k = np.arange(1, MAX_SESSIONS + 1)
    p = k ** -SESSIONS_EXPONENT
    return rng.choice(k, size=n, p=p / p.sum())


def _mean_sessions() -> float:
    k = np.arange(1, MAX_SESSIONS + 1)
    p = k ** -SESSIONS_EXPONENT
    return float((k * p).sum() / p.sum())


@dataclass
class Clickstream:
    """A generated clickstream: the Arrow table, each row's file (time window), and the users."""

    table: pa.Table
    file_of_row: np.ndarray  # (rows,) int32, non-decreasing: row i belongs to file file_of_row[i]
    num_files: int
    rows_per_file: int
    users: pa.StringArray  # distinct user_id values present in the table
    files_per_user: np.ndarray  # (len(users),) number of files each user appears in

    def file_table(self, k: int) -> pa.Table:
        """The rows of file (window) ``k``."""
        return self.table.slice(k * self.rows_per_file, self.rows_per_file)

    def files_slice(self, first: int, count: int) -> pa.Table:
        """The rows of files ``first .. first+count-1`` (one contiguous slice)."""
        return self.table.slice(first * self.rows_per_file, count * self.rows_per_file)

    def files_per_user_summary(self) -> dict[str, float]:
        """Distribution of files per user: p50/p90/p99/max and the share of users in <= 31 files."""
        f = self.files_per_user
        return {
            "users": int(len(f)),
            "p50": float(np.percentile(f, 50)),
            "p90": float(np.percentile(f, 90)),
            "p99": float(np.percentile(f, 99)),
            "max": int(f.max()) if len(f) else 0,
            "mean": float(f.mean()) if len(f) else 0.0,
            "share_le_31": float((f <= 31).mean()) if len(f) else 1.0,
        }


def make_clickstream(num_files: int, rows_per_file: int, seed: int = 0) -> Clickstream:
    """Generate ``num_files * rows_per_file`` clickstream rows, deterministically from ``seed``.

    Rows are sorted by ``event_time``; rows ``k*rows_per_file .. (k+1)*rows_per_file-1`` form
    file (time window) ``k``. About 3 M rows take a few seconds.
    """
    if num_files < 1 or rows_per_file < 1:
        raise ValueError("num_files and rows_per_file must be >= 1")
    rng = np.random.default_rng(seed)
    rows = num_files * rows_per_file
    span_s = num_files * WINDOW_SECONDS
    # Enough users that the events cover the span; the latest ~10% are cut off below.
    per_user = _mean_sessions() * MEAN_EVENTS_PER_SESSION
    num_users = max(1, int(np.ceil(rows * 1.1 / per_user)))

    # Users and their stable attributes.
    user_ids = uuid4_strings(rng, num_users)
    user_country = rng.choice(len(_COUNTRIES), size=num_users, p=_zipf_p(len(_COUNTRIES), 1.1))
    sess_count = _sessions_per_user(rng, num_users)

    # Sessions: owner, start, length, and session-level attributes.
    s_user = np.repeat(np.arange(num_users), sess_count)
    ns = len(s_user)
    s_start = rng.uniform(0.0, span_s, size=ns)
    s_events = rng.geometric(1.0 / MEAN_EVENTS_PER_SESSION, size=ns)
    while s_events.sum() < rows:  # tiny inputs: make sure there are enough events
        s_events += 1
    s_device = rng.choice(3, size=ns, p=_DEVICE_P)
    s_browser = rng.choice(len(_BROWSERS), size=ns, p=_BROWSER_P)
    s_os_choice = rng.integers(0, 4, size=ns)
    s_res_choice = rng.integers(0, 5, size=ns)
    s_app = rng.integers(0, 12, size=ns)
    s_ref = rng.integers(0, len(_REFERRERS), size=ns)
    s_ref_null = rng.random(ns) < 0.35
    s_camp = rng.integers(0, len(_CAMPAIGNS), size=ns)
    s_camp_null = rng.random(ns) < 0.8
    s_ip = rng.integers(0, 256, size=(ns, 4))
    session_ids = uuid4_strings(rng, ns)

    # Events: session of each event and its time (start + cumulative exponential gaps).
    total = int(s_events.sum())
    e_sess = np.repeat(np.arange(ns), s_events)
    gaps = rng.exponential(MEAN_EVENT_GAP_SECONDS, size=total)
    csum = np.cumsum(gaps)
    first = np.r_[0, np.cumsum(s_events)[:-1]]
    within = csum - np.repeat(csum[first] - gaps[first], s_events)
    e_time = s_start[e_sess] + within
    order = np.argsort(e_time, kind="stable")[:rows]
    e_sess = e_sess[order]
    e_time = e_time[order]
    n = rows

    e_type = rng.choice(len(_EVENT_TYPES), size=n, p=_EVENT_P)
    is_purchase = e_type == _EVENT_TYPES.index("purchase")
    has_item = is_purchase | np.isin(e_type, [_EVENT_TYPES.index(t) for t in ("add_to_cart", "remove_from_cart")])
    section = rng.choice(len(_SECTIONS), size=n, p=_zipf_p(len(_SECTIONS), 0.9))
    page_no = rng.zipf(1.6, size=n) % 5000
    dev = s_device[e_sess]
    os_idx = np.array([0, 4, 6])[dev] + s_os_choice[e_sess] % np.array([4, 2, 2])[dev]
    res_idx = np.array([0, 5, 9])[dev] + s_res_choice[e_sess] % np.array([5, 4, 3])[dev]
    os_pool = _OS["desktop"] + _OS["mobile"] + _OS["tablet"]
    res_pool = _RESOLUTIONS["desktop"] + _RESOLUTIONS["mobile"] + _RESOLUTIONS["tablet"]
    user_of_event = s_user[e_sess]
    country = user_country[user_of_event]
    ip_parts = [pa.array(s_ip[e_sess, i].astype(np.int16)).cast(pa.string()) for i in range(4)]

    columns = {
        "event_time": pa.array(START_US + (e_time * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "event_id": pa.array(np.arange(n, dtype=np.int64) + 1),
        "user_id": user_ids.take(pa.array(user_of_event)),
        "session_id": session_ids.take(pa.array(e_sess)),
        "event_type": _pick(_EVENT_TYPES, e_type),
        "page_url": pc.binary_join_element_wise(
            "https://shop.example.com", _pick(_SECTIONS, section), pa.array(page_no).cast(pa.string()), "/"
        ).cast(pa.string()),
        "referrer": _pick(_REFERRERS, s_ref[e_sess], mask=s_ref_null[e_sess]),
        "country": _pick(_COUNTRIES, country),
        "language": _pick([_LANG[c] for c in _COUNTRIES], country),
        "device": _pick(_DEVICES, dev),
        "browser": _pick(_BROWSERS, s_browser[e_sess]),
        "os": _pick(os_pool, os_idx),
        "app_version": _pick([f"5.{m}.{p}" for m in range(4) for p in range(3)], s_app[e_sess]),
        "screen_resolution": _pick(res_pool, res_idx),
        "ip": pc.binary_join_element_wise(*ip_parts, "."),
        "campaign": _pick(_CAMPAIGNS, s_camp[e_sess], mask=s_camp_null[e_sess]),
        "item_id": pa.array(rng.integers(100_000, 999_999, size=n), mask=~has_item),
        "quantity": pa.array(rng.geometric(0.6, size=n).astype(np.int32), mask=~has_item),
        "price": pa.array(np.round(rng.lognormal(3.2, 0.9, size=n), 2), mask=~is_purchase),
        "duration_ms": pa.array(np.minimum(rng.lognormal(7.5, 1.2, size=n), 2**31 - 1).astype(np.int32)),
        "is_mobile": pa.array(dev != 0),
    }
    table = pa.Table.from_arrays([columns[name] for name, _, _ in _COLUMNS], schema=clickstream_arrow_schema())
    table = table.combine_chunks()
    file_of_row = (np.arange(n) // rows_per_file).astype(np.int32)

    # Files per present user, from (user, file) pairs.
    pairs = np.unique(user_of_event.astype(np.int64) * num_files + file_of_row)
    pair_user = pairs // num_files
    present, counts = np.unique(pair_user, return_counts=True)
    return Clickstream(table, file_of_row, num_files, rows_per_file, user_ids.take(pa.array(present)), counts)


def absent_user_ids(n: int, present: pa.Array, seed: int = 1_000_003) -> pa.StringArray:
    """``n`` random UUID strings guaranteed not to occur in ``present``."""
    rng = np.random.default_rng(seed)
    out = uuid4_strings(rng, n + 16)
    out = out.filter(pc.invert(pc.is_in(out, value_set=present)))
    return out.slice(0, n)


def _zipf_p(n: int, s: float) -> np.ndarray:
    p = np.arange(1, n + 1, dtype=float) ** -s
    return p / p.sum()


# ------------------------------------------------------------------------------------------ the demo's table
_IDENTITY_STRUCT = StructType(
    NestedField(20, "id", StringType(), required=False), NestedField(21, "primary", BooleanType(), required=False)
)
DEMO_SCHEMA = Schema(
    NestedField(1, "event_time", TimestamptzType(), required=False),
    NestedField(2, "user_id", StringType(), required=False),
    NestedField(3, "session_id", LongType(), required=False),
    NestedField(4, "event_type", StringType(), required=False),
    NestedField(5, "page", StringType(), required=False),
    NestedField(6, "country", StringType(), required=False),
    NestedField(7, "duration_ms", LongType(), required=False),
    NestedField(8, "price", DoubleType(), required=False),
    NestedField(
        9, "identities",
        MapType(10, StringType(), 11, ListType(12, _IDENTITY_STRUCT, element_required=False), value_required=False),
        required=False,
    ),
)
"""The Iceberg schema of :func:`clickstream` tables (the demo's ``demo.clicks``)."""
_ARROW_IDENTITIES = pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string()), ("primary", pa.bool_())])))
_DEMO_EVENT_TYPES = ["view", "click", "add_to_cart", "purchase"]
_DEMO_EVENT_P = [0.6, 0.3, 0.07, 0.03]
_DEMO_COUNTRIES = ["US", "DE", "FR", "IN", "BR", "JP"]


def clickstream(num_users: int, days: int, events_per_day: int, seed: int = 7) -> tuple[pa.Table, list[str]]:
    """The demo's small clickstream (schema :data:`DEMO_SCHEMA`) and its user population.

    Sessions of 8 events; heavy-tailed user activity (a few very active users, most on a few days).
    User ``i`` of the population has the identities ``user{i}@example.com`` (email) and ``crm-{i}``.
    """
    rng = np.random.default_rng(seed)
    user_ids = uuid4_strings(rng, num_users)
    n = days * events_per_day
    day = np.repeat(np.arange(days), events_per_day)
    session_user = np.minimum(rng.zipf(1.3, -(-n // 8)) - 1, num_users - 1)
    user_idx = rng.permutation(num_users)[np.repeat(session_user, 8)[:n]]
    start = np.datetime64("2026-11-01T00:00:00", "us").astype(np.int64)
    t_us = start + day * 86_400_000_000 + rng.integers(0, 86_400_000_000, n)
    identities = [[("email", [{"id": f"user{i}@example.com", "primary": True}]), ("crm", [{"id": f"crm-{i}", "primary": False}])]
                  for i in user_idx]
    table = pa.table({  # the draws below happen in this order
        "event_time": pa.array(t_us, pa.timestamp("us", tz="UTC")),
        "user_id": user_ids.take(pa.array(user_idx)),
        "session_id": pa.array(user_idx * 1000 + day, pa.int64()),
        "event_type": _pick(_DEMO_EVENT_TYPES, rng.choice(len(_DEMO_EVENT_TYPES), n, p=_DEMO_EVENT_P)),
        "page": pa.array(np.char.add("/p/", rng.integers(0, 5000, n).astype(str))),
        "country": _pick(_DEMO_COUNTRIES, rng.choice(len(_DEMO_COUNTRIES), n)),
        "duration_ms": pa.array(rng.integers(10, 60_000, n), pa.int64()),
        "price": pa.array(np.round(rng.gamma(2.0, 20.0, n), 2)),
        "identities": pa.array(identities, type=_ARROW_IDENTITIES),
    })
    return table.sort_by("event_time"), user_ids.to_pylist()
