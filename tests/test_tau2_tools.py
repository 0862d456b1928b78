"""Airline / retail tools on small hand-made databases: DB effects checked by hand, error paths."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from orchestra_jax.envs.tau2 import ToolSet
from orchestra_jax.envs.tau2.airline import airline_tools
from orchestra_jax.envs.tau2.retail import retail_tools


# ------------------------------------------------------------------------------------ airline
def _flight(number, origin, dest, dep, arr, dates):
    return {"flight_number": number, "origin": origin, "destination": dest,
            "scheduled_departure_time_est": dep, "scheduled_arrival_time_est": arr, "dates": dates}


def _avail(eco, biz, seats=10):
    return {"status": "available", "available_seats": {"basic_economy": seats, "economy": seats,
                                                       "business": seats},
            "prices": {"basic_economy": eco - 20, "economy": eco, "business": biz}}


def _airline_db():
    return {
        "flights": {
            "HAT001": _flight("HAT001", "SFO", "JFK", "08:00:00", "16:00:00",
                              {"2024-05-20": _avail(120, 400), "2024-05-10": {"status": "landed"}}),
            "HAT002": _flight("HAT002", "SFO", "JFK", "10:00:00", "18:00:00",
                              {"2024-05-20": _avail(150, 450)}),
            "HAT003": _flight("HAT003", "SFO", "ORD", "06:00:00", "09:00:00",
                              {"2024-05-20": _avail(80, 300)}),
            "HAT004": _flight("HAT004", "ORD", "JFK", "10:00:00", "13:00:00",
                              {"2024-05-20": _avail(70, 250)}),
        },
        "users": {"ann_lee_1": {
            "user_id": "ann_lee_1", "membership": "gold", "reservations": ["ABC123"],
            "payment_methods": {
                "gift_card_1": {"source": "gift_card", "id": "gift_card_1", "amount": 500.0},
                "certificate_1": {"source": "certificate", "id": "certificate_1", "amount": 100.0},
                "credit_card_1": {"source": "credit_card", "id": "credit_card_1",
                                  "brand": "visa", "last_four": "1111"}}}},
        "reservations": {"ABC123": {
            "reservation_id": "ABC123", "user_id": "ann_lee_1", "origin": "SFO",
            "destination": "JFK", "flight_type": "one_way", "cabin": "economy",
            "flights": [{"origin": "SFO", "destination": "JFK", "flight_number": "HAT001",
                         "date": "2024-05-20", "price": 100}],
            "passengers": [{"first_name": "Ann", "last_name": "Lee", "dob": "1990-01-01"},
                           {"first_name": "Bo", "last_name": "Lee", "dob": "1992-02-02"}],
            "payment_history": [{"payment_id": "credit_card_1", "amount": 200}],
            "created_at": "2024-05-14T10:00:00", "total_baggages": 2, "nonfree_baggages": 0,
            "insurance": "no"}},
    }


@pytest.fixture
def adb():
    return _airline_db()


@pytest.fixture(scope="module")
def air():
    return ToolSet(airline_tools())


PAX2 = [{"first_name": "Ann", "last_name": "Lee", "dob": "1990-01-01"},
        {"first_name": "Cy", "last_name": "Lee", "dob": "2001-03-03"}]


def _book_args(**kw):
    args = {"user_id": "ann_lee_1", "origin": "SFO", "destination": "JFK",
            "flight_type": "one_way", "cabin": "economy",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}], "passengers": PAX2,
            "payment_methods": [{"payment_id": "certificate_1", "amount": 100},
                                {"payment_id": "gift_card_1", "amount": 250}],
            "total_baggages": 3, "nonfree_baggages": 1, "insurance": "yes"}
    args.update(kw)
    return args


def test_airline_toolset_matches_tau2_names(air):
    assert len(air) == 14
    assert air.write_tool_names() == {"book_reservation", "cancel_reservation", "send_certificate",
                                      "update_reservation_baggages", "update_reservation_flights",
                                      "update_reservation_passengers"}
    t = air.to_openai_tools()[0]
    assert t["type"] == "function" and set(t["function"]) == {"name", "description", "parameters"}


def test_book_reservation_payment_and_seats(air, adb):
    # 2 pax × $120 + insurance 2 × $30 + 1 non-free bag × $50 = $350 = $100 cert + $250 gift card
    r = air.execute(adb, "book_reservation", _book_args())
    assert r.ok, r.observation
    res = adb["reservations"]["HATHAT"]
    assert json.loads(r.observation)["reservation_id"] == "HATHAT"
    assert res["created_at"] == "2024-05-15T15:00:00"
    assert res["flights"] == [{"origin": "SFO", "destination": "JFK", "flight_number": "HAT001",
                               "date": "2024-05-20", "price": 120}]
    assert res["payment_history"] == [{"payment_id": "certificate_1", "amount": 100},
                                      {"payment_id": "gift_card_1", "amount": 250}]
    user = adb["users"]["ann_lee_1"]
    assert user["payment_methods"]["gift_card_1"]["amount"] == 250.0
    assert "certificate_1" not in user["payment_methods"]          # certificate used up
    assert user["reservations"] == ["ABC123", "HATHAT"]
    assert adb["flights"]["HAT001"]["dates"]["2024-05-20"]["available_seats"]["economy"] == 8
    # second booking gets the next deterministic id; credit card pays $240 (no extras)
    r2 = air.execute(adb, "book_reservation", _book_args(
        insurance="no", nonfree_baggages=0,
        payment_methods=[{"payment_id": "credit_card_1", "amount": 240}]))
    assert r2.ok and "HATHAU" in adb["reservations"]


@pytest.mark.parametrize("change,error", [
    ({"payment_methods": [{"payment_id": "gift_card_1", "amount": 349}]}, "does not add up"),
    ({"payment_methods": [{"payment_id": "gift_card_1", "amount": 600}]}, "Not enough balance"),
    ({"payment_methods": [{"payment_id": "gift_card_9", "amount": 350}]}, "not found"),
    ({"user_id": "nobody_0"}, "User nobody_0 not found"),
    ({"flights": [{"flight_number": "HAT001", "date": "2024-05-10"}]}, "not available"),
    ({"flights": [{"flight_number": "HAT999", "date": "2024-05-20"}]}, "Flight HAT999 not found"),
    ({"cabin": "first"}, "invalid arguments"),
    ({"total_baggages": "three"}, "invalid arguments"),
])
def test_book_reservation_errors_leave_db_unchanged(air, adb, change, error):
    before = json.dumps(adb, sort_keys=True)
    r = air.execute(adb, "book_reservation", _book_args(**change))
    assert not r.ok and r.observation.startswith("Error: ") and error in r.observation
    assert json.dumps(adb, sort_keys=True) == before


def test_cancel_reservation_refunds_everything(air, adb):
    r = air.execute(adb, "cancel_reservation", {"reservation_id": "ABC123"})
    assert r.ok
    res = adb["reservations"]["ABC123"]
    assert res["status"] == "cancelled"
    assert res["payment_history"] == [{"payment_id": "credit_card_1", "amount": 200},
                                      {"payment_id": "credit_card_1", "amount": -200}]
    assert not air.execute(adb, "cancel_reservation", {"reservation_id": "NOPE00"}).ok


def test_update_reservation_flights_price_difference(air, adb):
    # HAT001 (paid $100/pax) -> HAT002 economy $150/pax: 2 × (150 - 100) = $100 from the gift card
    r = air.execute(adb, "update_reservation_flights", {
        "reservation_id": "ABC123", "cabin": "economy", "payment_id": "gift_card_1",
        "flights": [{"flight_number": "HAT002", "date": "2024-05-20"}]})
    assert r.ok, r.observation
    res = adb["reservations"]["ABC123"]
    assert [f["flight_number"] for f in res["flights"]] == ["HAT002"]
    assert res["flights"][0]["price"] == 150
    assert res["payment_history"][-1] == {"payment_id": "gift_card_1", "amount": 100}
    assert adb["users"]["ann_lee_1"]["payment_methods"]["gift_card_1"]["amount"] == 400.0


def test_update_reservation_flights_keeps_old_price_and_refunds(air, adb):
    # same flight & cabin kept at the old $100 (today $120): no charge, no payment entry
    args = {"reservation_id": "ABC123", "cabin": "economy", "payment_id": "credit_card_1",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}]}
    assert air.execute(adb, "update_reservation_flights", args).ok
    assert adb["reservations"]["ABC123"]["flights"][0]["price"] == 100
    assert len(adb["reservations"]["ABC123"]["payment_history"]) == 1
    # cabin change to business at $400 today: repriced, 2 × (400 - 100) = $600 on the credit card
    args.update(cabin="business")
    assert air.execute(adb, "update_reservation_flights", args).ok
    res = adb["reservations"]["ABC123"]
    assert res["cabin"] == "business" and res["flights"][0]["price"] == 400
    assert res["payment_history"][-1] == {"payment_id": "credit_card_1", "amount": 600}
    # back down to economy ($120): refund 2 × (120 - 400) = -$560 onto the gift card
    args.update(cabin="economy", payment_id="gift_card_1")
    assert air.execute(adb, "update_reservation_flights", args).ok
    assert adb["reservations"]["ABC123"]["payment_history"][-1] == {"payment_id": "gift_card_1",
                                                                    "amount": -560}
    assert adb["users"]["ann_lee_1"]["payment_methods"]["gift_card_1"]["amount"] == 1060.0


def test_update_reservation_flights_errors(air, adb):
    base = {"reservation_id": "ABC123", "cabin": "economy",
            "flights": [{"flight_number": "HAT002", "date": "2024-05-20"}]}
    r = air.execute(adb, "update_reservation_flights", {**base, "payment_id": "certificate_1"})
    assert "Certificate cannot be used" in r.observation
    adb["users"]["ann_lee_1"]["payment_methods"]["gift_card_1"]["amount"] = 10.0
    r = air.execute(adb, "update_reservation_flights", {**base, "payment_id": "gift_card_1"})
    assert "Gift card balance is not enough" in r.observation
    assert adb["reservations"]["ABC123"]["flights"][0]["flight_number"] == "HAT001"


def test_update_baggages_and_passengers(air, adb):
    # 0 -> 2 non-free bags: 2 × $50 = $100 on the credit card
    r = air.execute(adb, "update_reservation_baggages", {
        "reservation_id": "ABC123", "total_baggages": 4, "nonfree_baggages": 2,
        "payment_id": "credit_card_1"})
    assert r.ok
    res = adb["reservations"]["ABC123"]
    assert (res["total_baggages"], res["nonfree_baggages"]) == (4, 2)
    assert res["payment_history"][-1] == {"payment_id": "credit_card_1", "amount": 100}
    # only free bags added: no charge, no new payment entry
    n = len(res["payment_history"])
    assert air.execute(adb, "update_reservation_baggages", {
        "reservation_id": "ABC123", "total_baggages": 5, "nonfree_baggages": 2,
        "payment_id": "gift_card_1"}).ok
    assert len(res["payment_history"]) == n
    # passengers: same count replaces, different count is refused
    r = air.execute(adb, "update_reservation_passengers",
                    {"reservation_id": "ABC123", "passengers": PAX2})
    assert r.ok and res["passengers"] == PAX2
    r = air.execute(adb, "update_reservation_passengers",
                    {"reservation_id": "ABC123", "passengers": PAX2[:1]})
    assert r.observation == "Error: Number of passengers does not match"


def test_certificates_search_status_calculate(air, adb):
    assert air.execute(adb, "send_certificate", {"user_id": "ann_lee_1", "amount": 150}).observation \
        == "Certificate certificate_3221322 added to user ann_lee_1 with amount 150."
    assert "certificate_3221323" in air.execute(
        adb, "send_certificate", {"user_id": "ann_lee_1", "amount": 50}).observation
    pm = adb["users"]["ann_lee_1"]["payment_methods"]
    assert pm["certificate_3221322"] == {"source": "certificate", "id": "certificate_3221322",
                                         "amount": 150}
    direct = json.loads(air.execute(adb, "search_direct_flight", {
        "origin": "SFO", "destination": "JFK", "date": "2024-05-20"}).observation)
    assert sorted(f["flight_number"] for f in direct) == ["HAT001", "HAT002"]
    onestop = json.loads(air.execute(adb, "search_onestop_flight", {
        "origin": "SFO", "destination": "JFK", "date": "2024-05-20"}).observation)
    assert [[a["flight_number"], b["flight_number"]] for a, b in onestop] == [["HAT003", "HAT004"]]
    assert air.execute(adb, "get_flight_status",
                       {"flight_number": "HAT001", "date": "2024-05-10"}).observation == "landed"
    calc = lambda e: air.execute(adb, "calculate", {"expression": e}).observation
    assert calc("2 + 3 * 4") == "14.0"
    assert calc("(100 - 30) / 3") == "23.33"
    assert calc("1 / 0").startswith("Error:")
    assert calc("__import__('os')") == "Error: Invalid characters in expression"
    assert calc("9**9**9**9").startswith("Error:")          # overflows, never hangs
    assert air.execute(adb, "transfer_to_human_agents", {"summary": "x"}).observation \
        == "Transfer successful"


def test_toolset_bad_calls_are_observations(air, adb):
    for name, args, frag in [("fly_me", {}, "Tool 'fly_me' not found"),
                             ("get_user_details", {}, "'user_id' is a required property"),
                             ("get_user_details", {"user_id": 5}, "is not of type 'string'"),
                             ("get_user_details", {"user_id": "a", "x": 1}, "unexpected argument"),
                             ("get_user_details", "not a dict", "must be a JSON object")]:
        r = air.execute(adb, name, args)
        assert not r.ok and r.observation.startswith("Error: ") and frag in r.observation, r


# ------------------------------------------------------------------------------------ retail
def _retail_db():
    addr = {"address1": "1 Main St", "address2": "", "city": "Austin", "country": "USA",
            "state": "TX", "zip": "78701"}

    def item(pid, iid, name, price, opts):
        return {"name": name, "product_id": pid, "item_id": iid, "price": price, "options": opts}

    return {
        "products": {
            "P1": {"name": "Kettle", "product_id": "P1", "variants": {
                "I1": {"item_id": "I1", "options": {"c": "glass"}, "available": True, "price": 100.0},
                "I2": {"item_id": "I2", "options": {"c": "steel"}, "available": True, "price": 120.5},
                "I3": {"item_id": "I3", "options": {"c": "gold"}, "available": False, "price": 90.0}}},
            "P2": {"name": "Mug", "product_id": "P2", "variants": {
                "M1": {"item_id": "M1", "options": {"s": "S"}, "available": True, "price": 10.0}}},
        },
        "users": {"u1": {
            "user_id": "u1", "name": {"first_name": "Ann", "last_name": "Lee"}, "address": addr,
            "email": "Ann@Example.com", "orders": ["#W1", "#W2", "#W3"],
            "payment_methods": {
                "gift_card_1": {"source": "gift_card", "id": "gift_card_1", "balance": 50.0},
                "credit_card_1": {"source": "credit_card", "id": "credit_card_1",
                                  "brand": "visa", "last_four": "1111"},
                "paypal_1": {"source": "paypal", "id": "paypal_1"}}}},
        "orders": {
            "#W1": {"order_id": "#W1", "user_id": "u1", "address": dict(addr), "status": "pending",
                    "items": [item("P1", "I1", "Kettle", 100.0, {"c": "glass"}),
                              item("P2", "M1", "Mug", 10.0, {"s": "S"})],
                    "fulfillments": [], "payment_history": [
                        {"transaction_type": "payment", "amount": 110.0,
                         "payment_method_id": "credit_card_1"}]},
            "#W2": {"order_id": "#W2", "user_id": "u1", "address": dict(addr),
                    "status": "delivered",
                    "items": [item("P1", "I1", "Kettle", 100.0, {"c": "glass"}),
                              item("P1", "I1", "Kettle", 100.0, {"c": "glass"})],
                    "fulfillments": [], "payment_history": [
                        {"transaction_type": "payment", "amount": 200.0,
                         "payment_method_id": "paypal_1"}]},
            "#W3": {"order_id": "#W3", "user_id": "u1", "address": dict(addr), "status": "pending",
                    "items": [item("P2", "M1", "Mug", 10.0, {"s": "S"})], "fulfillments": [],
                    "payment_history": [{"transaction_type": "payment", "amount": 10.0,
                                         "payment_method_id": "gift_card_1"}]},
        },
    }


@pytest.fixture
def rdb():
    return _retail_db()


@pytest.fixture(scope="module")
def ret():
    return ToolSet(retail_tools())


def test_retail_toolset(ret):
    assert len(ret) == 15
    assert ret.write_tool_names() == {
        "cancel_pending_order", "exchange_delivered_order_items", "modify_pending_order_address",
        "modify_pending_order_items", "modify_pending_order_payment", "modify_user_address",
        "return_delivered_order_items"}


def test_cancel_pending_order(ret, rdb):
    r = ret.execute(rdb, "cancel_pending_order", {"order_id": "#W3", "reason": "ordered by mistake"})
    assert r.ok
    o = rdb["orders"]["#W3"]
    assert o["status"] == "cancelled" and o["cancel_reason"] == "ordered by mistake"
    assert o["payment_history"][-1] == {"transaction_type": "refund", "amount": 10.0,
                                        "payment_method_id": "gift_card_1"}
    assert rdb["users"]["u1"]["payment_methods"]["gift_card_1"]["balance"] == 60.0  # 50 + 10
    assert ret.execute(rdb, "cancel_pending_order", {"order_id": "#W1", "reason": "too pricey"}
                       ).observation == "Error: Invalid reason"
    assert ret.execute(rdb, "cancel_pending_order", {"order_id": "#W2", "reason": "no longer needed"}
                       ).observation == "Error: Non-pending order cannot be cancelled"
    assert ret.execute(rdb, "cancel_pending_order", {"order_id": "#W9", "reason": "no longer needed"}
                       ).observation == "Error: Order not found"


def test_modify_pending_order_items(ret, rdb):
    args = {"order_id": "#W1", "item_ids": ["I1"], "new_item_ids": ["I2"],
            "payment_method_id": "gift_card_1"}
    r = ret.execute(rdb, "modify_pending_order_items", args)
    assert r.ok, r.observation
    o = rdb["orders"]["#W1"]
    assert o["status"] == "pending (item modified)"
    assert o["items"][0] == {"name": "Kettle", "product_id": "P1", "item_id": "I2", "price": 120.5,
                             "options": {"c": "steel"}}
    # difference 120.5 - 100 = 20.5 paid from the gift card: 50 - 20.5 = 29.5
    assert o["payment_history"][-1] == {"transaction_type": "payment", "amount": 20.5,
                                        "payment_method_id": "gift_card_1"}
    assert rdb["users"]["u1"]["payment_methods"]["gift_card_1"]["balance"] == 29.5
    # only once per order
    again = ret.execute(rdb, "modify_pending_order_items", {**args, "item_ids": ["I2"],
                                                            "new_item_ids": ["I1"]})
    assert again.observation == "Error: Non-pending order cannot be modified"


@pytest.mark.parametrize("change,error", [
    ({"new_item_ids": ["I3"]}, "New item I3 not found or available"),
    ({"new_item_ids": ["I1"]}, "should be different"),
    ({"new_item_ids": ["M1"]}, "Variant not found"),
    ({"item_ids": ["I1", "I1"], "new_item_ids": ["I2", "I2"]}, "I1 not found"),
    ({"new_item_ids": ["I2", "I2"]}, "should match"),
    ({"payment_method_id": "gift_card_9"}, "Payment method not found"),
])
def test_modify_pending_order_items_errors(ret, rdb, change, error):
    rdb["users"]["u1"]["payment_methods"]["gift_card_1"]["balance"] = 100.0
    args = {"order_id": "#W1", "item_ids": ["I1"], "new_item_ids": ["I2"],
            "payment_method_id": "gift_card_1", **change}
    before = json.dumps(rdb, sort_keys=True)
    r = ret.execute(rdb, "modify_pending_order_items", args)
    assert not r.ok and error in r.observation, r.observation
    assert json.dumps(rdb, sort_keys=True) == before


def test_modify_pending_order_items_insufficient_gift_card(ret, rdb):
    rdb["users"]["u1"]["payment_methods"]["gift_card_1"]["balance"] = 20.0   # < 20.5
    r = ret.execute(rdb, "modify_pending_order_items", {
        "order_id": "#W1", "item_ids": ["I1"], "new_item_ids": ["I2"],
        "payment_method_id": "gift_card_1"})
    assert r.observation == "Error: Insufficient gift card balance to pay for the new item"


def test_modify_payment_and_address(ret, rdb):
    r = ret.execute(rdb, "modify_pending_order_payment",
                    {"order_id": "#W3", "payment_method_id": "credit_card_1"})
    assert r.ok
    h = rdb["orders"]["#W3"]["payment_history"]
    assert h[1:] == [{"transaction_type": "payment", "amount": 10.0,
                      "payment_method_id": "credit_card_1"},
                     {"transaction_type": "refund", "amount": 10.0,
                      "payment_method_id": "gift_card_1"}]
    assert rdb["users"]["u1"]["payment_methods"]["gift_card_1"]["balance"] == 60.0
    # now two payments recorded: a second switch is refused
    assert "exactly one payment" in ret.execute(rdb, "modify_pending_order_payment", {
        "order_id": "#W3", "payment_method_id": "paypal_1"}).observation
    assert "should be different" in ret.execute(rdb, "modify_pending_order_payment", {
        "order_id": "#W1", "payment_method_id": "credit_card_1"}).observation
    # gift card must cover the whole order (110 > 60)
    assert "Insufficient gift card balance" in ret.execute(rdb, "modify_pending_order_payment", {
        "order_id": "#W1", "payment_method_id": "gift_card_1"}).observation
    new = {"address1": "9 Oak Rd", "address2": "Apt 2", "city": "Dallas", "state": "TX",
           "country": "USA", "zip": "75001"}
    assert ret.execute(rdb, "modify_pending_order_address", {"order_id": "#W1", **new}).ok
    assert rdb["orders"]["#W1"]["address"] == new
    assert "Non-pending" in ret.execute(rdb, "modify_pending_order_address",
                                        {"order_id": "#W2", **new}).observation
    assert ret.execute(rdb, "modify_user_address", {"user_id": "u1", **new}).ok
    assert rdb["users"]["u1"]["address"] == new


def test_return_and_exchange_delivered(ret, rdb):
    assert ret.execute(rdb, "return_delivered_order_items", {
        "order_id": "#W2", "item_ids": ["I1"], "payment_method_id": "credit_card_1"}
    ).observation == "Error: Payment method should be the original payment method"
    assert ret.execute(rdb, "return_delivered_order_items", {
        "order_id": "#W2", "item_ids": ["I1", "I1", "I1"], "payment_method_id": "paypal_1"}
    ).observation == "Error: Some item not found"
    assert "Non-delivered" in ret.execute(rdb, "return_delivered_order_items", {
        "order_id": "#W1", "item_ids": ["I1"], "payment_method_id": "credit_card_1"}).observation
    # exchange both kettles: 2 × (120.5 - 100) = 41.0 ≤ gift card 50 → recorded, not charged yet
    r = ret.execute(rdb, "exchange_delivered_order_items", {
        "order_id": "#W2", "item_ids": ["I1", "I1"], "new_item_ids": ["I2", "I2"],
        "payment_method_id": "gift_card_1"})
    assert r.ok, r.observation
    o = rdb["orders"]["#W2"]
    assert o["status"] == "exchange requested" and o["exchange_price_difference"] == 41.0
    assert o["exchange_items"] == ["I1", "I1"] and o["exchange_new_items"] == ["I2", "I2"]
    assert rdb["users"]["u1"]["payment_methods"]["gift_card_1"]["balance"] == 50.0
    # once exchanged, it cannot be returned any more
    assert "Non-delivered" in ret.execute(rdb, "return_delivered_order_items", {
        "order_id": "#W2", "item_ids": ["I1"], "payment_method_id": "paypal_1"}).observation


def test_return_to_original_or_gift_card(ret, rdb):
    r = ret.execute(rdb, "return_delivered_order_items", {
        "order_id": "#W2", "item_ids": ["I1"], "payment_method_id": "gift_card_1"})
    assert r.ok
    o = rdb["orders"]["#W2"]
    assert o["status"] == "return requested" and o["return_items"] == ["I1"]
    assert o["return_payment_method_id"] == "gift_card_1"


def test_exchange_insufficient_gift_card_and_lookups(ret, rdb):
    rdb["users"]["u1"]["payment_methods"]["gift_card_1"]["balance"] = 40.0   # < 41.0
    r = ret.execute(rdb, "exchange_delivered_order_items", {
        "order_id": "#W2", "item_ids": ["I1", "I1"], "new_item_ids": ["I2", "I2"],
        "payment_method_id": "gift_card_1"})
    assert "Insufficient gift card balance" in r.observation
    assert ret.execute(rdb, "find_user_id_by_email", {"email": "ann@example.COM"}).observation == "u1"
    assert ret.execute(rdb, "find_user_id_by_name_zip", {
        "first_name": "ann", "last_name": "LEE", "zip": "78701"}).observation == "u1"
    assert ret.execute(rdb, "find_user_id_by_name_zip", {
        "first_name": "ann", "last_name": "lee", "zip": "00000"}).observation \
        == "Error: User not found"
    assert json.loads(ret.execute(rdb, "list_all_product_types", {}).observation) == \
        {"Kettle": "P1", "Mug": "P2"}


@pytest.mark.parametrize("compat", [True, False])
def test_modify_two_products_tau2_compat(ret, rdb, monkeypatch, compat):
    from orchestra_jax.envs.tau2 import retail
    monkeypatch.setattr(retail, "TAU2_COMPAT", compat)
    rdb["products"]["P2"]["variants"]["M2"] = {"item_id": "M2", "options": {"s": "L"},
                                               "available": True, "price": 12.25}
    r = ret.execute(rdb, "modify_pending_order_items", {
        "order_id": "#W1", "item_ids": ["I1", "M1"], "new_item_ids": ["I2", "M2"],
        "payment_method_id": "credit_card_1"})
    assert r.ok, r.observation
    items = rdb["orders"]["#W1"]["items"]
    # difference (120.5 - 100) + (12.25 - 10) = 22.75 either way
    assert rdb["orders"]["#W1"]["payment_history"][-1]["amount"] == pytest.approx(22.75)
    assert [i["item_id"] for i in items] == ["I2", "M2"]
    if compat:   # tau2 v0.1.3 applies the last variant's price/options to every modified item
        assert [i["price"] for i in items] == [12.25, 12.25]
        assert items[0]["options"] == {"s": "L"}
    else:
        assert [i["price"] for i in items] == [120.5, 12.25]
        assert items[0]["options"] == {"c": "steel"}


# ------------------------------------------------------------------------------------ fuzz
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from(["ABC123", "ann_lee_1", "HAT001", "2024-05-20",
                                                "#W1", "I1", "I2", "u1", "gift_card_1", "economy"]),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=3),
    max_leaves=8)


def _arg_strategy(tools):
    names = st.sampled_from([t.name for t in tools] + ["nope"])

    def for_name(name):
        props = list(tools.get(name).parameters.get("properties", {})) if name in tools else []
        keys = st.sampled_from(props + ["junk"]) if props else st.just("junk")
        return st.tuples(st.just(name), st.dictionaries(keys, _json, max_size=6)
                         | _json)
    return names.flatmap(for_name)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_calls_never_raise(data, air, ret):
    for tools, db in ((air, _airline_db()), (ret, _retail_db())):
        name, args = data.draw(_arg_strategy(tools))
        r = tools.execute(db, name, args)
        assert isinstance(r.observation, str)
        assert r.ok or r.observation.startswith("Error: ")
