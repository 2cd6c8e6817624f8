"""Demo data: card transactions with a fraud label, and a knob that makes them drift.

The label follows a hidden logistic model over the features (amount against the
customer's usual amount, merchant risk, night hours, new accounts, velocity,
distance, card not present, and an interaction), so there is a learnable but
non-trivial signal at a realistic ~2% fraud rate. ``drift`` in [0, 1] moves the
feature distributions, brings countries never seen before, and changes how fraud
relates to the features (concept drift). ``scenario`` picks which of these a drift
does (for the heal benchmark, which needs each kind of drift alone):

- ``mixed`` (default): all of them at once, the demo's drift;
- ``covariate``: the features move (and unseen countries appear), the label rule stays;
- ``concept``: the features stay, fraud moves to other merchants and card presence
  stops mattering;
- ``prior``: the features and the ranking of risk stay, the fraud rate rises
  (a shift of the label rule's intercept).

``cards`` > 0 gives every transaction a ``card_id`` with a history: each card has its
own spending level, and fraud comes in bursts (a compromised card pays several times
within an hour, for more than it usually does). The label then follows the amount against
what the card usually pays (its level: the same in every draw with the same ``cards``, so
later traffic is judged as the history was, however the demo compresses its time) and the
card's payments in the last hour, strictly before each transaction. The client-sent
``avg_amount_30d`` and ``txn_count_24h`` are what one client app sees: a noisy mean and a
partial count. Feature views computed by the platform from the whole table see the history
itself (issue 14's F5).

Vectorised numpy: millions of rows/s.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

MERCHANT_CATEGORIES = [
    "grocery", "restaurant", "fuel", "travel", "electronics", "online_retail",
    "gambling", "jewelry", "pharmacy", "entertainment", "utilities", "atm_withdrawal",
]  # fmt: skip
MERCHANT_WEIGHTS = [0.22, 0.16, 0.10, 0.05, 0.06, 0.14, 0.02, 0.02, 0.07, 0.07, 0.06, 0.03]
MERCHANT_RISK = [-0.8, -0.5, -0.3, 0.6, 1.1, 0.9, 1.3, 1.4, -0.6, 0.1, -1.0, 0.5]
# Under drift, fraud moves to everyday merchants (a changed feature-label relation).
MERCHANT_RISK_DRIFTED = [0.9, 0.4, 0.8, -0.2, 0.0, 0.2, 0.3, 0.2, 0.5, 0.1, 0.3, 1.2]

COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "MX", "BR", "IN", "JP", "AU", "NG", "RU"]
COUNTRY_WEIGHTS = [0.40, 0.10, 0.08, 0.07, 0.05, 0.05, 0.04, 0.05, 0.03, 0.03, 0.03, 0.03, 0.02, 0.01, 0.01]
COUNTRY_RISK = [0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0, 0.4, 0.5, 0.3, 0.0, 0.0, 1.0, 0.9]
UNSEEN_COUNTRIES = ["VE", "KP", "ZW", "MM", "LY"]

DEVICES = ["mobile", "desktop", "pos", "atm"]
DEVICE_WEIGHTS = [0.35, 0.20, 0.38, 0.07]
DEVICE_WEIGHTS_DRIFTED = [0.65, 0.20, 0.12, 0.03]

START_TIME_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z

CARD_POPULATION_SEED = 14
SCENARIOS = ("mixed", "covariate", "concept", "prior")
POPULATION_MEAN_AMOUNT = float(np.exp(3.6 + (0.7**2 + 0.5**2) / 2))  # cards' amounts: lognormal levels and spread
# Intercept shifts at drift 1. mixed: keeps the fraud rate realistic while the features
# grow riskier; prior: about triples the rate. (concept needs none: its rate stays near 2%.)
MIXED_OFFSET, PRIOR_OFFSET = -1.4, 1.3


def generate(
    n: int,
    seed: int = 0,
    drift: float = 0.0,
    start_id: int = 0,
    start_time_us: int = START_TIME_US,
    days: float = 30.0,
    scenario: str = "mixed",
    cards: int = 0,
) -> pa.Table:
    """``n`` transactions as an Arrow table matching the demo contract.

    ``scenario`` says what ``drift`` changes (see the module's doc); its draws from
    the seeded generator are the same in every scenario. ``cards`` > 0 adds ``card_id``
    and card histories (drawn from a second generator: without cards, nothing changes).
    """
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be within [0, 1], got {drift}")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario '{scenario}': use one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    d = drift if scenario in ("mixed", "covariate") else 0.0  # how far the features move
    c = drift if scenario in ("mixed", "concept") else 0.0  # share of rows under the drifted relation
    offset = {"mixed": MIXED_OFFSET, "covariate": 0.0, "concept": 0.0, "prior": PRIOR_OFFSET}[scenario]

    merchant = rng.choice(len(MERCHANT_CATEGORIES), n, p=MERCHANT_WEIGHTS)
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS)
    device = rng.choice(len(DEVICES), n, p=_mix(DEVICE_WEIGHTS, DEVICE_WEIGHTS_DRIFTED, d))
    card_present = (device >= 2) & (rng.random(n) < 0.97)

    # Night hours grow more common under drift.
    day_hour = np.clip(rng.normal(14, 4.5, n), 0, 23.99)
    night_hour = rng.uniform(0, 6, n)
    hour = np.where(rng.random(n) < 0.08 + 0.35 * d, night_hour, day_hour).astype(np.int64)

    customer_age = np.clip(rng.normal(42 - 8 * d, 14, n), 18, 95).astype(np.int64)
    account_age_days = np.minimum(rng.exponential(900, n), 9000).astype(np.int64)
    avg_amount_30d = rng.lognormal(3.6, 0.7, n)
    amount = np.round(avg_amount_30d * rng.lognormal(0.0 + 0.6 * d, 0.8 + 0.3 * d, n), 2)
    txn_count_24h = rng.poisson(2.0 + 2.5 * d, n)
    distance_km = rng.exponential(25 + 150 * d, n)

    history = _Cards(np.random.default_rng([seed, 14]), n, cards, days, d) if cards else None
    amount_ratio, velocity = np.log(amount / avg_amount_30d + 1e-3), 0.30 * np.maximum(txn_count_24h - 3, 0)
    if history is not None:
        amount, avg_amount_30d, txn_count_24h = history.amount, history.client_mean_30d, history.client_count_24h
        amount_ratio, velocity = np.log(amount / history.usual + 1e-3), 0.9 * history.true_count_1h

    risk = np.where(rng.random(n) < c, 1, 0)  # rows that follow the drifted relation
    merchant_risk = np.where(risk, np.take(MERCHANT_RISK_DRIFTED, merchant), np.take(MERCHANT_RISK, merchant))
    night = (hour < 6).astype(float)
    logit = (
        -5.3
        + 1.1 * amount_ratio
        + merchant_risk
        + np.take(COUNTRY_RISK, country)
        + 1.0 * night
        + 1.3 * (account_age_days < 30)
        + velocity
        + 0.9 * (distance_km > 300)
        + np.where(risk, 0.0, 0.8) * ~card_present
        + 0.8 * night * ~card_present  # an interaction a linear model misses
        - 0.01 * (customer_age - 40)
        + offset * drift
    )
    is_fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    country_names = np.array(COUNTRIES + UNSEEN_COUNTRIES, dtype=object)
    if d > 0:  # a share of traffic from countries the training data never had
        unseen = rng.random(n) < 0.15 * d
        country = np.where(unseen, len(COUNTRIES) + rng.integers(0, len(UNSEEN_COUNTRIES), n), country)

    offsets = np.sort(rng.uniform(0, days * 86_400e6, n)).astype(np.int64)
    table = pa.table(
        {
            "transaction_id": pa.array(np.arange(start_id, start_id + n, dtype=np.int64)),
            "event_time": pa.array(start_time_us + offsets, pa.timestamp("us", tz="UTC")),
            "amount": pa.array(amount),
            "merchant_category": _strings(merchant, MERCHANT_CATEGORIES),
            "country": _strings(country, country_names),
            "device": _strings(device, DEVICES),
            "card_present": pa.array(card_present),
            "hour": pa.array(hour),
            "customer_age": pa.array(customer_age),
            "account_age_days": pa.array(account_age_days),
            "avg_amount_30d": pa.array(np.round(avg_amount_30d, 2)),
            "txn_count_24h": pa.array(txn_count_24h.astype(np.int64)),
            "distance_from_home_km": pa.array(np.round(distance_km, 2)),
            "is_fraud": pa.array(is_fraud),
        }
    )
    if history is None:
        return table
    table = table.set_column(
        1, "event_time", pa.array(start_time_us + history.offsets_us, pa.timestamp("us", tz="UTC"))
    )
    table = table.append_column("card_id", history.card_ids())
    return table.take(np.argsort(history.offsets_us, kind="stable"))


def card_levels(cards: int) -> np.ndarray:
    """Each card's usual log-amount: a population fixed by its size, so every draw with the same
    ``cards`` (the history, later traffic) sees the same cards spend the same way."""
    return np.random.default_rng([CARD_POPULATION_SEED, cards]).normal(3.6, 0.7, cards)


class _Cards:
    """Card histories: who paid when and how much, and what the history says at each payment."""

    def __init__(self, rng: np.random.Generator, n: int, cards: int, days: float, drift: float) -> None:
        self.card = rng.integers(0, cards, n)
        self.offsets_us = rng.uniform(0, days * 86_400e6, n).astype(np.int64)
        level = card_levels(cards)
        # What the card usually pays (its level's mean): a payment is judged against it. A 30-day
        # history estimates it; a draw of later traffic shares it, however its time is compressed.
        self.usual = np.exp(level[self.card] + 0.5**2 / 2)
        self.amount = np.round(np.exp(level[self.card] + rng.normal(0.6 * drift, 0.5, n)), 2)
        # Bursts: a compromised card pays 2-5 times within an hour, for about 3.5x its usual.
        leaders = np.flatnonzero(rng.random(n) < 0.004)
        for lead in leaders:
            members = rng.choice(n, rng.integers(1, 5), replace=False)
            self.card[members] = self.card[lead]
            self.offsets_us[members] = self.offsets_us[lead] + rng.uniform(1e6, 3_600e6, len(members)).astype(np.int64)
            self.amount[np.append(members, lead)] *= np.exp(rng.normal(1.25, 0.3, len(members) + 1))
        self.amount = np.round(self.amount, 2)
        self.true_mean_30d, self.true_count_1h, true_count_24h = self._history()
        # One client app's view: a noisy mean and the payments it saw itself (about half).
        self.client_mean_30d = np.round(self.true_mean_30d * rng.lognormal(0.0, 0.35, n), 2)
        self.client_count_24h = rng.binomial(true_count_24h, 0.5).astype(np.int64)

    def _history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean amount over 30 days, payments in the last hour and day, strictly before each payment."""
        from rayinfra.features.aggregate import Events, compute
        from rayinfra.features.definitions import Aggregation, FeatureView

        view = FeatureView(entity="card", ttl="3650d", default=float("nan"), aggregations=[
            Aggregation(column="amount", function="mean", time_window="30d", name="mean"),
            Aggregation(column="amount", function="count", time_window="1h", name="h"),
            Aggregation(column="amount", function="count", time_window="24h", name="d"),
        ])  # fmt: skip
        times = self.offsets_us * 1000
        events = Events.sorted(self.card, times, {"amount": self.amount})
        got, _ = compute(view, events, self.card, times)
        # A card's first payment in 30 days has no history: all anyone knows is the population's mean.
        mean = np.where(np.isnan(got["mean"]), POPULATION_MEAN_AMOUNT, got["mean"])
        return mean, np.nan_to_num(got["h"]), np.nan_to_num(got["d"]).astype(np.int64)

    def card_ids(self) -> pa.Array:
        return pa.array(np.char.add("card-", self.card.astype(str)).astype(object), pa.string())


def _mix(a: list[float], b: list[float], t: float) -> np.ndarray:
    p = (1 - t) * np.asarray(a) + t * np.asarray(b)
    return p / p.sum()


def _strings(codes: np.ndarray, names: list[str] | np.ndarray) -> pa.Array:
    # Dictionary-encode then decode: far faster than building millions of Python strings.
    dictionary = pa.array(list(names), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary).cast(pa.string())
