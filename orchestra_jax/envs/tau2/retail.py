"""tau2-bench retail domain tools (semantics of tau2-bench v0.1.3 ``domains/retail/tools.py``).

Every tool is ``fn(db, **arguments)`` over the retail DB dict (``{"products", "users",
"orders"}``). Money is in US dollars (floats, rounded to cents where tau2 rounds). Order states:
``pending`` → (``pending (item modified)``) → ``processed`` → ``delivered``; ``cancelled``,
``exchange requested``, ``return requested``. Domain-rule violations raise :class:`ToolError`
(reported to the agent as ``"Error: …"``).

Payment methods: ``gift_card`` (has ``balance``, debited/credited immediately), ``credit_card``
and ``paypal`` (external; only recorded in the order's ``payment_history``).
"""

from __future__ import annotations

import json

from orchestra_jax.envs.tau2.generic import calculate, transfer_to_human_agents
from orchestra_jax.envs.tau2.toolset import (FunctionTool, ToolError, load_schema_file,
                                             tools_from_schemas)

__all__ = ["retail_tools", "CANCEL_REASONS", "TAU2_COMPAT"]

CANCEL_REASONS = ("no longer needed", "ordered by mistake")

# tau2-bench v0.1.3 ``modify_pending_order_items`` quirks, kept by default so DB hashes (and
# hence rewards) match tau2's: the price difference is not rounded, and every modified item gets
# the price and options of the LAST new variant in the call (a bug when two different products
# are modified in one call). Set to False for the corrected per-item semantics.
TAU2_COMPAT = True


# ---------------------------------------------------------------------------------------------
# lookups
# ---------------------------------------------------------------------------------------------
def _order(db: dict, order_id: str) -> dict:
    if order_id not in db["orders"]:
        raise ToolError("Order not found")
    return db["orders"][order_id]


def _user(db: dict, user_id: str) -> dict:
    if user_id not in db["users"]:
        raise ToolError("User not found")
    return db["users"][user_id]


def _product(db: dict, product_id: str) -> dict:
    if product_id not in db["products"]:
        raise ToolError("Product not found")
    return db["products"][product_id]


def _variant(db: dict, product_id: str, item_id: str) -> dict:
    product = _product(db, product_id)
    if item_id not in product["variants"]:
        raise ToolError("Variant not found")
    return product["variants"][item_id]


def _payment_method(db: dict, user_id: str, payment_method_id: str) -> dict:
    user = _user(db, user_id)
    if payment_method_id not in user["payment_methods"]:
        raise ToolError("Payment method not found")
    return user["payment_methods"][payment_method_id]


def _is_gift_card(method: dict) -> bool:
    return method.get("source") == "gift_card"


def _check_items_in_order(order: dict, item_ids: list, message: str) -> None:
    """Each id (duplicates allowed) must occur in the order at least as often as listed."""
    all_ids = [item["item_id"] for item in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > all_ids.count(item_id):
            raise ToolError(message.format(item_id=item_id))


def _price_difference(db: dict, order: dict, item_ids: list, new_item_ids: list,
                      forbid_same: bool) -> tuple[float, list[dict]]:
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match.")
    diff = 0.0
    variants = []
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        if forbid_same and item_id == new_item_id:
            raise ToolError("The new item id should be different from the old item id")
        item = next((it for it in order["items"] if it["item_id"] == item_id), None)
        if item is None:
            raise ToolError(f"Item {item_id} not found")
        variant = _variant(db, item["product_id"], new_item_id)
        if not variant.get("available", False):
            raise ToolError(f"New item {new_item_id} not found or available")
        diff += variant["price"] - item["price"]
        variants.append(variant)
    return diff, variants


# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------
def cancel_pending_order(db: dict, order_id: str, reason: str) -> dict:
    """Pending only; reason ∈ {no longer needed, ordered by mistake}. Every payment is refunded
    (a ``refund`` entry each); gift cards are credited immediately."""
    order = _order(db, order_id)
    if order["status"] != "pending":
        raise ToolError("Non-pending order cannot be cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError("Invalid reason")
    refunds = []
    for payment in order["payment_history"]:
        pid = payment["payment_method_id"]
        refunds.append({"transaction_type": "refund", "amount": payment["amount"],
                        "payment_method_id": pid})
        method = _payment_method(db, order["user_id"], pid)
        if _is_gift_card(method):
            method["balance"] = round(method["balance"] + payment["amount"], 2)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    order["payment_history"].extend(refunds)
    return order


def exchange_delivered_order_items(db: dict, order_id: str, item_ids: list, new_item_ids: list,
                                   payment_method_id: str) -> dict:
    """Delivered only; new items must be available variants of the same products. Records the
    request (status ``exchange requested``); a gift card must cover a positive difference."""
    order = _order(db, order_id)
    if order["status"] != "delivered":
        raise ToolError("Non-delivered order cannot be exchanged")
    _check_items_in_order(order, item_ids, "Number of {item_id} not found.")
    diff, _ = _price_difference(db, order, item_ids, new_item_ids, forbid_same=False)
    diff = round(diff, 2)
    method = _payment_method(db, order["user_id"], payment_method_id)
    if _is_gift_card(method) and method["balance"] < diff:
        raise ToolError("Insufficient gift card balance to pay for the price difference")
    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff
    return order


def find_user_id_by_name_zip(db: dict, first_name: str, last_name: str, zip: str) -> str:
    for user_id, user in db["users"].items():
        if (user["name"]["first_name"].lower() == first_name.lower()
                and user["name"]["last_name"].lower() == last_name.lower()
                and user["address"]["zip"] == zip):
            return user_id
    raise ToolError("User not found")


def find_user_id_by_email(db: dict, email: str) -> str:
    for user_id, user in db["users"].items():
        if user["email"].lower() == email.lower():
            return user_id
    raise ToolError("User not found")


def get_order_details(db: dict, order_id: str) -> dict:
    return _order(db, order_id)


def get_product_details(db: dict, product_id: str) -> dict:
    return _product(db, product_id)


def get_user_details(db: dict, user_id: str) -> dict:
    return _user(db, user_id)


def list_all_product_types(db: dict) -> str:
    return json.dumps({p["name"]: p["product_id"] for p in db["products"].values()},
                      sort_keys=True)


def _address(address1: str, address2: str, city: str, state: str, country: str,
             zip: str) -> dict:
    return {"address1": address1, "address2": address2, "city": city, "country": country,
            "state": state, "zip": zip}


def modify_pending_order_address(db: dict, order_id: str, address1: str, address2: str,
                                 city: str, state: str, country: str, zip: str) -> dict:
    order = _order(db, order_id)
    if "pending" not in order["status"]:
        raise ToolError("Non-pending order cannot be modified")
    order["address"] = _address(address1, address2, city, state, country, zip)
    return order


def modify_pending_order_items(db: dict, order_id: str, item_ids: list, new_item_ids: list,
                               payment_method_id: str) -> dict:
    """Pending (not yet item-modified) only, once. The price difference is paid (positive) or
    refunded (negative) through ``payment_method_id``; gift cards move immediately. Status
    becomes ``pending (item modified)``. See :data:`TAU2_COMPAT` for tau2's quirks."""
    order = _order(db, order_id)
    if order["status"] != "pending":
        raise ToolError("Non-pending order cannot be modified")
    _check_items_in_order(order, item_ids, "{item_id} not found")
    diff, variants = _price_difference(db, order, item_ids, new_item_ids, forbid_same=True)
    if not TAU2_COMPAT:
        diff = round(diff, 2)
    method = _payment_method(db, order["user_id"], payment_method_id)
    if _is_gift_card(method) and method["balance"] < diff:
        raise ToolError("Insufficient gift card balance to pay for the new item")
    order["payment_history"].append({
        "transaction_type": "payment" if diff > 0 else "refund",
        "amount": abs(diff), "payment_method_id": payment_method_id})
    if _is_gift_card(method):
        method["balance"] = round(method["balance"] - diff, 2)
    for item_id, new_item_id, variant in zip(item_ids, new_item_ids, variants):
        if TAU2_COMPAT:
            variant = variants[-1]
        item = next((it for it in order["items"] if it["item_id"] == item_id), None)
        if item is None:  # a duplicate id listed more than once was already replaced
            raise ToolError(f"Item {item_id} not found")
        item["item_id"] = new_item_id
        item["price"] = variant["price"]
        item["options"] = dict(variant["options"])
    order["status"] = "pending (item modified)"
    return order


def modify_pending_order_payment(db: dict, order_id: str, payment_method_id: str) -> dict:
    """Swap the single payment of a pending order to another method (payment + refund
    entries); gift cards are debited/credited immediately."""
    order = _order(db, order_id)
    if "pending" not in order["status"]:
        raise ToolError("Non-pending order cannot be modified")
    method = _payment_method(db, order["user_id"], payment_method_id)
    history = order["payment_history"]
    if len(history) != 1 or history[0]["transaction_type"] != "payment":
        raise ToolError("There should be exactly one payment for a pending order")
    old_id = history[0]["payment_method_id"]
    if old_id == payment_method_id:
        raise ToolError("The new payment method should be different from the current one")
    amount = history[0]["amount"]
    if _is_gift_card(method) and method["balance"] < amount:
        raise ToolError("Insufficient gift card balance to pay for the order")
    history.extend([
        {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
        {"transaction_type": "refund", "amount": amount, "payment_method_id": old_id},
    ])
    if _is_gift_card(method):
        method["balance"] = round(method["balance"] - amount, 2)
    old_method = _payment_method(db, order["user_id"], old_id)
    if _is_gift_card(old_method):
        old_method["balance"] = round(old_method["balance"] + amount, 2)
    return order


def modify_user_address(db: dict, user_id: str, address1: str, address2: str, city: str,
                        state: str, country: str, zip: str) -> dict:
    user = _user(db, user_id)
    user["address"] = _address(address1, address2, city, state, country, zip)
    return user


def return_delivered_order_items(db: dict, order_id: str, item_ids: list,
                                 payment_method_id: str) -> dict:
    """Delivered only; refund goes to the original payment method or a gift card. Records the
    request (status ``return requested``)."""
    order = _order(db, order_id)
    if order["status"] != "delivered":
        raise ToolError("Non-delivered order cannot be returned")
    method = _payment_method(db, order["user_id"], payment_method_id)
    if (not _is_gift_card(method)
            and payment_method_id != order["payment_history"][0]["payment_method_id"]):
        raise ToolError("Payment method should be the original payment method")
    _check_items_in_order(order, item_ids, "Some item not found")
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return order


_FUNCTIONS = {
    "calculate": calculate, "cancel_pending_order": cancel_pending_order,
    "exchange_delivered_order_items": exchange_delivered_order_items,
    "find_user_id_by_name_zip": find_user_id_by_name_zip,
    "find_user_id_by_email": find_user_id_by_email, "get_order_details": get_order_details,
    "get_product_details": get_product_details, "get_user_details": get_user_details,
    "list_all_product_types": list_all_product_types,
    "modify_pending_order_address": modify_pending_order_address,
    "modify_pending_order_items": modify_pending_order_items,
    "modify_pending_order_payment": modify_pending_order_payment,
    "modify_user_address": modify_user_address,
    "return_delivered_order_items": return_delivered_order_items,
    "transfer_to_human_agents": transfer_to_human_agents,
}


def retail_tools() -> list[FunctionTool]:
    """All 15 retail tools with tau2 v0.1.3 names, descriptions and parameter schemas."""
    return tools_from_schemas(load_schema_file("retail"), _FUNCTIONS)
