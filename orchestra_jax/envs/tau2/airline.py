"""tau2-bench airline domain tools (semantics of tau2-bench v0.1.3 ``domains/airline/tools.py``).

Every tool is a plain function ``fn(db, **arguments)`` over the airline DB dict
(``{"flights", "users", "reservations"}`` as in ``db.json``). Money is in US dollars
(reservation prices and payments are integers, gift-card/certificate balances floats).
Domain-rule violations raise :class:`ToolError` and reach the agent as ``"Error: …"``.

Determinism (as in tau2): the clock is fixed at ``2024-05-15T15:00:00`` (policy "current
time"); new reservation ids are ``HATHAT``, ``HATHAU``, ``HATHAV`` (tau2's three) and then
``HATH00``, ``HATH01``, … ; new certificate ids are ``certificate_3221322``, ``…323``,
``…324`` (tau2's three) and then counting upwards. tau2 raises after three; we keep counting so
long episodes never dead-end.

Known tau2 quirks kept on purpose (so rewards match tau2's): cancelling a reservation does not
release seats; changing flights does not touch the flight inventory; the booking API does not
check policy rules (cabin/baggage allowance/24 h rule) — the agent must.

Argument types as in tau2 (the tools get raw JSON values): where tau2 builds a pydantic model the
value is coerced like pydantic (``"3"`` → 3 for a reservation's bag counts and payment amounts, a
certificate amount becomes a float); elsewhere the raw value is used, so ``"1"`` non-free bags make
the price arithmetic fail (an error, as in tau2) and a whole-number float stored by
``update_reservation_baggages`` stays a float (a different DB hash, as in tau2).
"""

from __future__ import annotations

import datetime as _dt
from typing import Optional

from orchestra_jax.envs.tau2.generic import calculate, transfer_to_human_agents
from orchestra_jax.envs.tau2.toolset import (FunctionTool, ToolError, as_pyd_float, as_pyd_int,
                                             load_schema_file, tools_from_schemas)

__all__ = ["CURRENT_TIME", "AIRPORTS", "airline_tools"]

CURRENT_TIME = "2024-05-15T15:00:00"

# tau2's hard-coded airport list (iata → city).
AIRPORTS = {
    "SFO": "San Francisco", "JFK": "New York", "LAX": "Los Angeles", "ORD": "Chicago",
    "DFW": "Dallas", "DEN": "Denver", "SEA": "Seattle", "ATL": "Atlanta", "MIA": "Miami",
    "BOS": "Boston", "PHX": "Phoenix", "IAH": "Houston", "LAS": "Las Vegas", "MCO": "Orlando",
    "EWR": "Newark", "CLT": "Charlotte", "MSP": "Minneapolis", "DTW": "Detroit",
    "PHL": "Philadelphia", "LGA": "LaGuardia",
}

_TAU2_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV")
_TAU2_PAYMENT_IDS = (3221322, 3221323, 3221324)
_CABINS = ("basic_economy", "economy", "business")


# ---------------------------------------------------------------------------------------------
# lookups
# ---------------------------------------------------------------------------------------------
def _user(db: dict, user_id: str) -> dict:
    if user_id not in db["users"]:
        raise ToolError(f"User {user_id} not found")
    return db["users"][user_id]


def _reservation(db: dict, reservation_id: str) -> dict:
    if reservation_id not in db["reservations"]:
        raise ToolError(f"Reservation {reservation_id} not found")
    return db["reservations"][reservation_id]


def _flight(db: dict, flight_number: str) -> dict:
    if flight_number not in db["flights"]:
        raise ToolError(f"Flight {flight_number} not found")
    return db["flights"][flight_number]


def _flight_instance(db: dict, flight_number: str, date: str) -> dict:
    flight = _flight(db, flight_number)
    if date not in flight["dates"]:
        raise ToolError(f"Flight {flight_number} not found on date {date}")
    return flight["dates"][date]


def _new_reservation_id(db: dict) -> str:
    for rid in _TAU2_RESERVATION_IDS:
        if rid not in db["reservations"]:
            return rid
    n = 0
    while f"HATH{n:02d}" in db["reservations"]:
        n += 1
    return f"HATH{n:02d}"


def _new_payment_ids():
    yield from _TAU2_PAYMENT_IDS
    n = _TAU2_PAYMENT_IDS[-1] + 1
    while True:
        yield n
        n += 1


def _search_direct(db: dict, date: str, origin: Optional[str] = None,
                   destination: Optional[str] = None, leave_after: Optional[str] = None) -> list:
    results = []
    for flight in db["flights"].values():
        inst = flight["dates"].get(date)
        if inst is None or inst.get("status") != "available":
            continue
        if origin is not None and flight["origin"] != origin:
            continue
        if destination is not None and flight["destination"] != destination:
            continue
        if leave_after is not None and flight["scheduled_departure_time_est"] < leave_after:
            continue
        results.append({
            "flight_number": flight["flight_number"], "origin": flight["origin"],
            "destination": flight["destination"], "status": "available",
            "scheduled_departure_time_est": flight["scheduled_departure_time_est"],
            "scheduled_arrival_time_est": flight["scheduled_arrival_time_est"],
            "date": None,
            "available_seats": dict(inst["available_seats"]), "prices": dict(inst["prices"]),
        })
    return results


def _payment_for_update(user: dict, payment_id: str, total_price: int) -> Optional[dict]:
    """tau2 ``_payment_for_update``: one gift card or credit card pays (or receives) the difference."""
    if payment_id not in user["payment_methods"]:
        raise ToolError("Payment method not found")
    method = user["payment_methods"][payment_id]
    if method["source"] == "certificate":
        raise ToolError("Certificate cannot be used to update reservation")
    if method["source"] == "gift_card" and method["amount"] < total_price:
        raise ToolError("Gift card balance is not enough")
    if method["source"] == "gift_card":
        method["amount"] = method["amount"] - total_price
    if total_price != 0:
        return {"payment_id": payment_id, "amount": as_pyd_int(total_price, "amount")}
    return None


def _pyd_str(value, field: str) -> str:
    if not isinstance(value, str):
        raise ToolError(f"{field}: Input should be a valid string")
    return value


def _clean_flights(flights: list) -> list[dict]:
    return [{"flight_number": f["flight_number"], "date": f["date"]} for f in flights]


def _clean_passengers(passengers: list) -> list[dict]:
    return [{"first_name": p["first_name"], "last_name": p["last_name"], "dob": p["dob"]}
            for p in passengers]


# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------
def book_reservation(db: dict, user_id: str, origin: str, destination: str, flight_type: str,
                     cabin: str, flights: list, passengers: list, payment_methods: list,
                     total_baggages: int, nonfree_baggages: int, insurance: str) -> dict:
    """Book; price = Σ flight price × passengers + $30 × passengers (insurance) + $50 × nonfree bags.

    Payments must exist in the profile, gift cards/certificates must cover their amount and
    the amounts must sum to the total. Gift cards are debited; a used certificate is removed
    (its remainder is not refundable). Seats are taken from each flight date.
    """
    flights = _clean_flights(flights)
    passengers = _clean_passengers(passengers)
    payment_methods = [{"payment_id": _pyd_str(p["payment_id"], "payment_id"),
                        "amount": as_pyd_int(p["amount"], "amount")} for p in payment_methods]
    if cabin not in _CABINS:
        raise ToolError(f"Invalid cabin {cabin}")
    user = _user(db, user_id)
    reservation_id = _new_reservation_id(db)
    reservation = {   # tau2's Reservation model validates (coerces) the bag counts
        "reservation_id": reservation_id, "user_id": user_id, "origin": origin,
        "destination": destination, "flight_type": flight_type, "cabin": cabin, "flights": [],
        "passengers": passengers, "payment_history": [dict(p) for p in payment_methods],
        "created_at": CURRENT_TIME,
        "total_baggages": as_pyd_int(total_baggages, "total_baggages"),
        "nonfree_baggages": as_pyd_int(nonfree_baggages, "nonfree_baggages"),
        "insurance": insurance,
    }
    total_price = 0
    instances = []
    for info in flights:
        number = info["flight_number"]
        flight = _flight(db, number)
        inst = _flight_instance(db, number, info["date"])
        if inst.get("status") != "available":
            raise ToolError(f"Flight {number} not available on date {info['date']}")
        if inst["available_seats"][cabin] < len(passengers):
            raise ToolError(f"Not enough seats on flight {number}")
        price = inst["prices"][cabin]
        reservation["flights"].append({"origin": flight["origin"],
                                       "destination": flight["destination"],
                                       "flight_number": number, "date": info["date"],
                                       "price": price})
        instances.append(inst)
        total_price += price * len(passengers)
    if insurance == "yes":
        total_price += 30 * len(passengers)
    total_price += 50 * nonfree_baggages

    for p in payment_methods:
        pid = p["payment_id"]
        if pid not in user["payment_methods"]:
            raise ToolError(f"Payment method {pid} not found")
        method = user["payment_methods"][pid]
        if method["source"] in ("gift_card", "certificate") and method["amount"] < p["amount"]:
            raise ToolError(f"Not enough balance in payment method {pid}")
    total_payment = sum(p["amount"] for p in payment_methods)
    if total_payment != total_price:
        raise ToolError(f"Payment amount does not add up, total price is {total_price}, "
                        f"but paid {total_payment}")
    for p in payment_methods:
        method = user["payment_methods"][p["payment_id"]]
        if method["source"] == "gift_card":
            method["amount"] = method["amount"] - p["amount"]
        elif method["source"] == "certificate":
            user["payment_methods"].pop(p["payment_id"])
    for inst in instances:
        inst["available_seats"][cabin] -= len(passengers)
    db["reservations"][reservation_id] = reservation
    user["reservations"].append(reservation_id)
    return reservation


def cancel_reservation(db: dict, reservation_id: str) -> dict:
    """Refund every payment (negative entries appended) and mark ``status: cancelled``.

    As in tau2, seats are not released and the API does not check the cancellation rules.
    """
    reservation = _reservation(db, reservation_id)
    refunds = [{"payment_id": p["payment_id"], "amount": -p["amount"]}
               for p in reservation["payment_history"]]
    reservation["payment_history"].extend(refunds)
    reservation["status"] = "cancelled"
    return reservation


def get_reservation_details(db: dict, reservation_id: str) -> dict:
    return _reservation(db, reservation_id)


def get_user_details(db: dict, user_id: str) -> dict:
    return _user(db, user_id)


def list_all_airports(db: dict) -> list[dict]:
    return [{"iata": k, "city": v} for k, v in AIRPORTS.items()]


def search_direct_flight(db: dict, origin: str, destination: str, date: str) -> list[dict]:
    return _search_direct(db, date=date, origin=origin, destination=destination)


def search_onestop_flight(db: dict, origin: str, destination: str, date: str) -> list[list[dict]]:
    """Pairs (leg1, leg2): leg2 leaves the connection airport after leg1's scheduled arrival,
    on the next day when leg1's arrival time carries ``+1``."""
    results = []
    for first in _search_direct(db, date=date, origin=origin):
        first["date"] = date
        arrival = first["scheduled_arrival_time_est"]
        date2 = date
        if "+1" in arrival:
            try:
                date2 = (_dt.date.fromisoformat(date) + _dt.timedelta(days=1)).isoformat()
            except ValueError:
                raise ToolError(f"Invalid date {date}") from None
        for second in _search_direct(db, date=date2, origin=first["destination"],
                                     destination=destination, leave_after=arrival):
            second["date"] = date2
            results.append([first, second])
    return results


def send_certificate(db: dict, user_id: str, amount: int) -> str:
    user = _user(db, user_id)
    for n in _new_payment_ids():
        pid = f"certificate_{n}"
        if pid not in user["payment_methods"]:
            user["payment_methods"][pid] = {"source": "certificate", "id": pid,
                                            "amount": as_pyd_float(amount, "amount")}
            return f"Certificate {pid} added to user {user_id} with amount {amount}."
    raise AssertionError("unreachable")


def update_reservation_baggages(db: dict, reservation_id: str, total_baggages: int,
                                nonfree_baggages: int, payment_id: str) -> dict:
    """Charge $50 per added non-free bag (never refunds) to one gift card / credit card."""
    reservation = _reservation(db, reservation_id)
    user = _user(db, reservation["user_id"])
    total_price = 50 * max(0, nonfree_baggages - reservation["nonfree_baggages"])
    payment = _payment_for_update(user, payment_id, total_price)
    if payment is not None:
        reservation["payment_history"].append(payment)
    reservation["total_baggages"] = total_baggages
    reservation["nonfree_baggages"] = nonfree_baggages
    return reservation


def update_reservation_flights(db: dict, reservation_id: str, cabin: str, flights: list,
                               payment_id: str) -> dict:
    """Replace the flights (and cabin). Kept segments (same number, date and cabin) keep their
    old price; new ones cost today's price. The difference vs. what was paid is charged
    (positive) or refunded (negative) through one gift card / credit card."""
    flights = _clean_flights(flights)
    if cabin not in _CABINS:
        raise ToolError(f"Invalid cabin {cabin}")
    reservation = _reservation(db, reservation_id)
    user = _user(db, reservation["user_id"])
    n_pax = len(reservation["passengers"])
    total_price = 0
    new_flights = []
    for info in flights:
        kept = next((f for f in reservation["flights"]
                     if f["flight_number"] == info["flight_number"] and f["date"] == info["date"]
                     and cabin == reservation["cabin"]), None)
        if kept is not None:
            total_price += kept["price"] * n_pax
            new_flights.append(kept)
            continue
        flight = _flight(db, info["flight_number"])
        inst = _flight_instance(db, info["flight_number"], info["date"])
        if inst.get("status") != "available":
            raise ToolError(f"Flight {info['flight_number']} not available on date {info['date']}")
        if inst["available_seats"][cabin] < n_pax:
            raise ToolError(f"Not enough seats on flight {info['flight_number']}")
        seg = {"flight_number": info["flight_number"], "date": info["date"],
               "price": inst["prices"][cabin], "origin": flight["origin"],
               "destination": flight["destination"]}
        total_price += seg["price"] * n_pax
        new_flights.append(seg)
    total_price -= sum(f["price"] for f in reservation["flights"]) * n_pax
    payment = _payment_for_update(user, payment_id, total_price)
    if payment is not None:
        reservation["payment_history"].append(payment)
    reservation["flights"] = new_flights
    reservation["cabin"] = cabin
    return reservation


def update_reservation_passengers(db: dict, reservation_id: str, passengers: list) -> dict:
    reservation = _reservation(db, reservation_id)
    passengers = _clean_passengers(passengers)
    if len(passengers) != len(reservation["passengers"]):
        raise ToolError("Number of passengers does not match")
    reservation["passengers"] = passengers
    return reservation


def get_flight_status(db: dict, flight_number: str, date: str) -> str:
    return _flight_instance(db, flight_number, date)["status"]


_FUNCTIONS = {
    "book_reservation": book_reservation, "calculate": calculate,
    "cancel_reservation": cancel_reservation, "get_reservation_details": get_reservation_details,
    "get_user_details": get_user_details, "list_all_airports": list_all_airports,
    "search_direct_flight": search_direct_flight, "search_onestop_flight": search_onestop_flight,
    "send_certificate": send_certificate, "transfer_to_human_agents": transfer_to_human_agents,
    "update_reservation_baggages": update_reservation_baggages,
    "update_reservation_flights": update_reservation_flights,
    "update_reservation_passengers": update_reservation_passengers,
    "get_flight_status": get_flight_status,
}


def airline_tools() -> list[FunctionTool]:
    """All 14 airline tools with tau2 v0.1.3 names, descriptions and parameter schemas."""
    return tools_from_schemas(load_schema_file("airline"), _FUNCTIONS)
