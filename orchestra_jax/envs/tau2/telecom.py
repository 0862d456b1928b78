"""tau2-bench telecom domain, agent side (semantics of tau2-bench v0.1.3 ``domains/telecom``).

The agent (a telecom tech-support rep) works on the carrier's database (``db.toml``: ``plans``,
``customers``, ``lines``, ``bills``, ``devices``, each a list of records). The customer's phone
is the *user's* side (:mod:`orchestra_jax.envs.tau2.telecom_user`): dual control — the agent can
only fix account-side problems itself and must guide the user through device-side fixes.

Every tool is ``fn(db, **arguments)`` over the DB dict. Dates are ISO strings; the clock is
fixed at 2025-02-25 (tau2's ``get_today``). Arguments reach the functions raw (no JSON-schema
type check: the ToolSet runs in ``strict_schema=False`` mode), as tau2 calls its python methods
directly; values go through pydantic-like coercion only where tau2 builds a pydantic model
(new bills and line items). Domain errors raise :class:`ToolError` → ``"Error: …"``.

Besides the 13 agent tools the module has tau2's non-tool *environment functions* used by task
``initialization_actions`` (``set_data_usage``, ``suspend_line_for_overdue_bill``) and the
``env_assertions`` functions. :func:`telecom_sync` is tau2's ``TelecomEnvironment.sync_tools``:
after every tool call the user's surroundings follow the agent DB (line active, roaming
allowed, data-limit exceeded, payment requests) and a paid payment request marks its bill paid.

Deviation from tau2 (documented): a fresh draft bill (``refuel_data`` for a customer without
one) gets a deterministic id ``B`` + 8 hex digits derived from the customer and bill count,
where tau2 draws ``uuid4`` (so tau2's own gold replay cannot match such a DB; no shipped
telecom task has ``DB`` in its reward basis).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Any, Optional

from orchestra_jax.envs.tau2.generic import transfer_to_human_agents
from orchestra_jax.envs.tau2.toolset import (GENERIC, READ, WRITE, FunctionTool, ToolError,
                                             ToolSet, as_pyd_float, as_pyd_int)

__all__ = ["TODAY", "telecom_toolset", "telecom_sync", "normalise_telecom_db",
           "as_pyd_float", "as_pyd_int"]

TODAY = _dt.date(2025, 2, 25)
LINE_ACTIVE, LINE_SUSPENDED, LINE_PENDING = "Active", "Suspended", "Pending Activation"
BILL_DRAFT, BILL_AWAITING, BILL_PAID, BILL_OVERDUE = "Draft", "Awaiting Payment", "Paid", "Overdue"

# Fields pydantic fills with defaults when tau2 loads db.toml (so the agent sees them too).
_DEFAULTS = {
    "lines": {"status": LINE_PENDING, "device_id": None, "data_used_gb": 0.0,
              "data_refueling_gb": 0.0, "roaming_enabled": False, "contract_end_date": None,
              "last_plan_change_date": None, "last_sim_replacement_date": None,
              "suspension_start_date": None},
    "devices": {"imei": None, "activated": False, "activation_date": None,
                "last_esim_transfer_date": None},
    "customers": {"account_status": "Pending Verification", "payment_methods": [],
                  "line_ids": [], "bill_ids": [], "created_at": "2025-01-01T00:00:00",
                  "last_extension_date": None, "goodwill_credit_used_this_year": 0.0},
    "bills": {"line_items": [], "status": BILL_DRAFT},
}
_FLOAT_FIELDS = {"plans": ("data_limit_gb", "price_per_month", "data_refueling_price_per_gb"),
                 "lines": ("data_used_gb", "data_refueling_gb"),
                 "customers": ("goodwill_credit_used_this_year",), "bills": ("total_due",)}


def normalise_telecom_db(db: dict) -> dict:
    """Fill pydantic defaults and make float-typed fields floats (as tau2's model load does)."""
    for coll, defaults in _DEFAULTS.items():
        for rec in db.get(coll, []):
            for k, v in defaults.items():
                rec.setdefault(k, list(v) if isinstance(v, list) else v)
    for coll, fields in _FLOAT_FIELDS.items():
        for rec in db.get(coll, []):
            for f in fields:
                if isinstance(rec.get(f), int) and not isinstance(rec.get(f), bool):
                    rec[f] = float(rec[f])
    for bill in db.get("bills", []):
        for item in bill.get("line_items", []):
            if isinstance(item.get("amount"), int):
                item["amount"] = float(item["amount"])
    return db


# ---------------------------------------------------------------------------------------------
# lookups
# ---------------------------------------------------------------------------------------------
def _find(db: dict, coll: str, key: str, value: Any, what: str) -> dict:
    for rec in db[coll]:
        if rec[key] == value:
            return rec
    raise ToolError(f"{what} with ID {value} not found")


def _line(db: dict, line_id: str) -> dict:
    return _find(db, "lines", "line_id", line_id, "Line")


def _plan(db: dict, plan_id: str) -> dict:
    return _find(db, "plans", "plan_id", plan_id, "Plan")


def _device(db: dict, device_id: str) -> dict:
    return _find(db, "devices", "device_id", device_id, "Device")


def _bill(db: dict, bill_id: str) -> dict:
    return _find(db, "bills", "bill_id", bill_id, "Bill")


def _line_by_phone(db: dict, phone_number: str) -> dict:
    for line in db["lines"]:
        if line["phone_number"] == phone_number:
            return line
    raise ToolError(f"Line with phone number {phone_number} not found")


def _target_line(db: dict, customer_id: str, line_id: str) -> dict:
    customer = get_customer_by_id(db, customer_id)
    if line_id not in customer["line_ids"]:
        raise ToolError(f"Line {line_id} not found for customer {customer_id}")
    return _line(db, line_id)


def _bills_awaiting_payment(db: dict, customer: dict) -> list[dict]:
    return [b for b in (_bill(db, bid) for bid in customer["bill_ids"])
            if b["status"] == BILL_AWAITING]


def _first_of_next_month(day: _dt.date) -> _dt.date:
    return ((day.replace(day=1) + _dt.timedelta(days=32)).replace(day=1))


def _new_draft_bill_id(db: dict, customer_id: str) -> str:
    n = len(db["bills"])
    while True:
        digest = hashlib.sha256(f"{customer_id}:{n}".encode()).hexdigest()[:8]
        bid = f"B{digest}"
        if all(b["bill_id"] != bid for b in db["bills"]):
            return bid
        n += 1


def _apply_one_time_charge(db: dict, customer_id: str, amount: float, description: str) -> None:
    """Add a charge (or credit) line item to the customer's draft bill, creating one if needed."""
    customer = get_customer_by_id(db, customer_id)
    draft = next((b for b in (_bill(db, bid) for bid in customer["bill_ids"])
                  if b["status"] == BILL_DRAFT), None)
    if draft is None:
        start = _first_of_next_month(TODAY)
        end = _first_of_next_month(start) - _dt.timedelta(days=1)
        draft = {"bill_id": _new_draft_bill_id(db, customer_id), "customer_id": customer_id,
                 "period_start": start.isoformat(), "period_end": end.isoformat(),
                 "issue_date": start.isoformat(), "total_due": 0.0,
                 "due_date": (start + _dt.timedelta(days=14)).isoformat(), "line_items": [],
                 "status": BILL_DRAFT}
        db["bills"].append(draft)
        customer["bill_ids"].append(draft["bill_id"])
    draft["line_items"].append({"description": description,
                                "amount": as_pyd_float(amount, "amount"),
                                "date": TODAY.isoformat(),
                                "item_type": "Credit" if amount < 0 else "Charge"})
    draft["total_due"] += amount


# ---------------------------------------------------------------------------------------------
# agent tools
# ---------------------------------------------------------------------------------------------
def get_customer_by_phone(db: dict, phone_number: str) -> dict:
    for customer in db["customers"]:
        if customer["phone_number"] == phone_number:
            return customer
        for line_id in customer["line_ids"]:
            if _line(db, line_id)["phone_number"] == phone_number:
                return customer
    raise ToolError(f"Customer with phone number {phone_number} not found")


def get_customer_by_id(db: dict, customer_id: str) -> dict:
    for customer in db["customers"]:
        if customer["customer_id"] == customer_id:
            return customer
    raise ToolError(f"Customer with ID {customer_id} not found")


def get_customer_by_name(db: dict, full_name: str, dob: str) -> list[dict]:
    return [c for c in db["customers"]
            if c["full_name"].lower() == full_name.lower() and c["date_of_birth"] == dob]


def get_details_by_id(db: dict, id: str) -> dict:  # noqa: A002 (tau2's argument name)
    for prefix, fn in (("L", _line), ("D", _device), ("B", _bill), ("C", get_customer_by_id),
                       ("P", _plan)):
        if id.startswith(prefix):
            return fn(db, id)
    raise ToolError(f"Unknown ID format or type: {id}")


def suspend_line(db: dict, customer_id: str, line_id: str, reason: str) -> dict:
    line = _target_line(db, customer_id, line_id)
    if line["status"] != LINE_ACTIVE:
        raise ToolError("Line must be active to suspend")
    line["status"] = LINE_SUSPENDED
    line["suspension_start_date"] = TODAY.isoformat()
    return {"message": "Line suspended successfully. $5/month holding fee will apply.",
            "line": line}


def resume_line(db: dict, customer_id: str, line_id: str) -> dict:
    line = _target_line(db, customer_id, line_id)
    if line["status"] not in (LINE_SUSPENDED, LINE_PENDING):
        raise ToolError("Line must be suspended to resume")
    line["status"] = LINE_ACTIVE
    line["suspension_start_date"] = None
    return {"message": "Line resumed successfully", "line": line}


def get_bills_for_customer(db: dict, customer_id: str, limit: int = 12) -> list[dict]:
    customer = get_customer_by_id(db, customer_id)
    bills = [_bill(db, bid) for bid in customer["bill_ids"]]
    return sorted(bills, key=lambda b: b["issue_date"], reverse=True)[:limit]


def send_payment_request(db: dict, customer_id: str, bill_id: str) -> str:
    customer = get_customer_by_id(db, customer_id)
    if _bills_awaiting_payment(db, customer):
        raise ToolError("A bill is already awaiting payment for this customer")
    if bill_id not in customer["bill_ids"]:
        raise ToolError(f"Bill {bill_id} not found for customer {customer_id}")
    bill = _bill(db, bill_id)
    bill["status"] = BILL_AWAITING
    return f"Payment request sent to the customer for bill {bill['bill_id']}"


def get_data_usage(db: dict, customer_id: str, line_id: str) -> dict:
    line = _target_line(db, customer_id, line_id)
    plan = _plan(db, line["plan_id"])
    cycle_end = _first_of_next_month(TODAY) - _dt.timedelta(days=1)
    return {"line_id": line_id, "data_used_gb": line["data_used_gb"],
            "data_limit_gb": plan["data_limit_gb"],
            "data_refueling_gb": line["data_refueling_gb"], "cycle_end_date": cycle_end.isoformat()}


def enable_roaming(db: dict, customer_id: str, line_id: str) -> str:
    line = _target_line(db, customer_id, line_id)
    if line["roaming_enabled"]:
        return "Roaming was already enabled"
    line["roaming_enabled"] = True
    return "Roaming enabled successfully"


def disable_roaming(db: dict, customer_id: str, line_id: str) -> str:
    line = _target_line(db, customer_id, line_id)
    if not line["roaming_enabled"]:
        return "Roaming was already disabled"
    line["roaming_enabled"] = False
    return "Roaming disabled successfully"


def refuel_data(db: dict, customer_id: str, line_id: str, gb_amount: float) -> dict:
    """Add ``gb_amount`` GB to the line and charge it at the plan's refuelling rate."""
    line = _target_line(db, customer_id, line_id)
    if gb_amount <= 0:
        raise ToolError("Refuel amount must be positive")
    plan = _plan(db, line["plan_id"])
    price = plan["data_refueling_price_per_gb"]
    charge = gb_amount * price
    line["data_refueling_gb"] += gb_amount
    _apply_one_time_charge(db, customer_id, charge,
                           f"Data refueling: {gb_amount} GB at ${price}/GB")
    return {"message": f"Successfully added {gb_amount} GB of data for line {line_id} for "
                       f"${charge:.2f}",
            "new_data_refueling_gb": line["data_refueling_gb"], "charge": charge}


# ---------------------------------------------------------------------------------------------
# environment functions (task initialisation) and assertions — not shown to the agent
# ---------------------------------------------------------------------------------------------
def set_data_usage(db: dict, customer_id: str, line_id: str, data_used_gb: float) -> str:
    line = _target_line(db, customer_id, line_id)
    line["data_used_gb"] = data_used_gb
    return f"Data usage set to {data_used_gb} GB for line {line_id}"


def suspend_line_for_overdue_bill(db: dict, customer_id: str, line_id: str, new_bill_id: str,
                                  contract_ended: bool) -> str:
    line = _line(db, line_id)
    if line["status"] != LINE_ACTIVE:
        raise ToolError("Line must be active to suspend for unpaid bill")
    amount = _plan(db, line["plan_id"])["price_per_month"]
    if amount <= 0:
        raise ToolError("Amount must be positive for overdue bill")
    customer = get_customer_by_id(db, customer_id)
    if any(_bill(db, bid)["status"] == BILL_OVERDUE for bid in customer["bill_ids"]):
        raise ToolError("Customer already has an overdue bill")
    last_of_prev = TODAY.replace(day=1) - _dt.timedelta(days=1)
    first_of_prev = last_of_prev.replace(day=1)
    bill = {"bill_id": new_bill_id, "customer_id": customer_id,
            "period_start": first_of_prev.isoformat(), "period_end": last_of_prev.isoformat(),
            "issue_date": first_of_prev.isoformat(), "total_due": 0.0,
            "due_date": (first_of_prev + _dt.timedelta(days=14)).isoformat(),
            "line_items": [{"description": f"Charge for line {line['line_id']}",
                            "amount": as_pyd_float(amount, "amount"),
                            "date": TODAY.isoformat(),
                            "item_type": "Charge" if amount > 0 else "Credit"}],
            "status": BILL_OVERDUE}
    bill["total_due"] += amount
    db["bills"].append(bill)
    customer["bill_ids"].append(new_bill_id)
    line["status"] = LINE_SUSPENDED
    line["suspension_start_date"] = TODAY.isoformat()
    if contract_ended:
        line["contract_end_date"] = last_of_prev.isoformat()
    return (f"Line {line_id} suspended for unpaid bill {new_bill_id}. "
            f"Contract ended: {contract_ended}")


def assert_data_refueling_amount(db: dict, customer_id: str, line_id: str,
                                 expected_amount: float) -> bool:
    return abs(_target_line(db, customer_id, line_id)["data_refueling_gb"] - expected_amount) < 1e-6


def assert_line_status(db: dict, customer_id: str, line_id: str, expected_status: str) -> bool:
    return _target_line(db, customer_id, line_id)["status"] == expected_status


def assert_overdue_bill_exists(db: dict, customer_id: str, overdue_bill_id: str) -> bool:
    customer = get_customer_by_id(db, customer_id)
    if overdue_bill_id not in customer["bill_ids"]:
        raise ToolError(f"Overdue bill {overdue_bill_id} not found")
    if _bill(db, overdue_bill_id)["status"] != BILL_OVERDUE:
        raise ToolError(f"Overdue bill {overdue_bill_id} is not overdue")
    return True


def assert_no_overdue_bill(db: dict, overdue_bill_id: str) -> bool:
    try:
        return _bill(db, overdue_bill_id)["status"] == BILL_PAID
    except ToolError:
        return True


# ---------------------------------------------------------------------------------------------
# environment sync (tau2 TelecomEnvironment.sync_tools)
# ---------------------------------------------------------------------------------------------
def telecom_sync(db: dict, user_db: Optional[dict]) -> None:
    """Propagate the agent DB into the user's surroundings (and a made payment into the DB)."""
    if user_db is None:
        return
    sur = user_db["surroundings"]
    phone = sur.get("phone_number")
    if phone is None:
        return
    line = _line_by_phone(db, phone)
    sur["line_active"] = line["status"] == LINE_ACTIVE
    sur["roaming_allowed"] = bool(line["roaming_enabled"])
    plan = _plan(db, line["plan_id"])
    sur["mobile_data_usage_exceeded"] = (
        line["data_used_gb"] >= plan["data_limit_gb"] + line["data_refueling_gb"])
    request = sur.get("payment_request")
    if request is not None and request.get("paid"):
        _bill(db, request["bill_id"])["status"] = BILL_PAID
        sur["payment_request"] = None
    if sur.get("payment_request") is None:
        bills = _bills_awaiting_payment(db, get_customer_by_phone(db, phone))
        if bills:
            sur["payment_request"] = {"bill_id": bills[0]["bill_id"],
                                      "amount_due": as_pyd_float(bills[0]["total_due"]),
                                      "paid": False}


# ---------------------------------------------------------------------------------------------
# schemas
# ---------------------------------------------------------------------------------------------
def _s(desc: str) -> dict:
    return {"type": "string", "description": desc}


def _obj(props: dict, required: Optional[list[str]] = None) -> dict:
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required}


_CID = _s("ID of the customer who owns the line.")
_LID = _s("ID of the line.")

_TOOLS = [
    ("get_customer_by_phone", READ, get_customer_by_phone,
     "Finds a customer by their primary contact or line phone number.",
     _obj({"phone_number": _s("The phone number to search for.")})),
    ("get_customer_by_id", READ, get_customer_by_id,
     "Retrieves a customer directly by their unique ID.",
     _obj({"customer_id": _s("The unique identifier of the customer.")})),
    ("get_customer_by_name", READ, get_customer_by_name,
     "Searches for customers by name and DOB. May return multiple matches if names are "
     "similar, DOB helps disambiguate.",
     _obj({"full_name": _s("The full name of the customer."),
           "dob": _s("Date of birth for verification, in the format YYYY-MM-DD.")})),
    ("get_details_by_id", READ, get_details_by_id,
     "Retrieves the details for a given ID.\n\nThe ID must be a valid ID for a Customer, Line, "
     "Device, Bill, or Plan.",
     _obj({"id": _s("The ID of the object to retrieve.")})),
    ("suspend_line", WRITE, suspend_line,
     "Suspends a specific line (max 6 months).\n\nChecks: Line status must be Active.\nLogic: "
     "Sets line status to Suspended, records suspension_start_date.",
     _obj({"customer_id": _CID, "line_id": _s("ID of the line to suspend."),
           "reason": _s("Reason for suspension.")})),
    ("resume_line", WRITE, resume_line,
     "Resumes a suspended line.\n\nChecks: Line status must be Suspended or Pending "
     "Activation.\nLogic: Sets line status to Active, clears suspension_start_date.",
     _obj({"customer_id": _CID, "line_id": _s("ID of the line to resume.")})),
    ("get_bills_for_customer", READ, get_bills_for_customer,
     "Retrieves a list of the customer's bills, most recent first.",
     _obj({"customer_id": _s("ID of the customer."),
           "limit": {"type": "integer", "default": 12,
                     "description": "Maximum number of bills to return."}}, ["customer_id"])),
    ("send_payment_request", WRITE, send_payment_request,
     "Sends a payment request to the customer for a specific bill.\n\nChecks:\n    - Customer "
     "exists\n    - Bill exists and belongs to the customer\n    - No other bills are already "
     "awaiting payment for this customer\nLogic: Sets bill status to AWAITING_PAYMENT and "
     "notifies customer.\nWarning: This method does not check if the bill is already PAID.\n"
     "Always check the bill status before calling this method.",
     _obj({"customer_id": _s("ID of the customer who owns the bill."),
           "bill_id": _s("ID of the bill to send payment request for.")})),
    ("get_data_usage", READ, get_data_usage,
     "Retrieves current billing cycle data usage for a line, including data\nrefueling amount, "
     "data limit, and cycle end date.",
     _obj({"customer_id": _CID, "line_id": _s("ID of the line to check usage for.")})),
    ("enable_roaming", WRITE, enable_roaming, "Enables international roaming on a line.",
     _obj({"customer_id": _CID, "line_id": _s("ID of the line to enable roaming for.")})),
    ("disable_roaming", WRITE, disable_roaming, "Disables international roaming on a line.",
     _obj({"customer_id": _CID, "line_id": _s("ID of the line to disable roaming for.")})),
    ("transfer_to_human_agents", GENERIC, transfer_to_human_agents,
     "Transfer the user to a human agent, with a summary of the user's issue.\n\nOnly transfer "
     "if\n -  the user explicitly asks for a human agent\n -  given the policy and the "
     "available tools, you cannot solve the user's issue.",
     _obj({"summary": _s("A summary of the user's issue.")})),
    ("refuel_data", WRITE, refuel_data,
     "Refuels data for a specific line, adding to the customer's bill.\n\nChecks: Line status "
     "must be Active, Customer owns the line.\nLogic: Adds data to the line and charges "
     "customer based on the plan's refueling rate.",
     _obj({"customer_id": _CID, "line_id": _s("ID of the line to refuel data for."),
           "gb_amount": {"type": "number",
                         "description": "Amount of data to add in gigabytes."}})),
]

_ENV_FUNCTIONS = {"set_data_usage": set_data_usage,
                  "suspend_line_for_overdue_bill": suspend_line_for_overdue_bill}
_ASSERTIONS = {"assert_data_refueling_amount": assert_data_refueling_amount,
               "assert_line_status": assert_line_status,
               "assert_overdue_bill_exists": assert_overdue_bill_exists,
               "assert_no_overdue_bill": assert_no_overdue_bill}


def telecom_toolset() -> ToolSet:
    """The 13 agent tools (tau2 names and descriptions) + env functions and assertions."""
    tools = [FunctionTool(name, desc, params, fn, ttype)
             for name, ttype, fn, desc, params in _TOOLS]
    return ToolSet(tools, assertions=_ASSERTIONS, functions=_ENV_FUNCTIONS, strict_schema=False)
