"""tau2-bench telecom: the customer's phone — device state, simulation core, task init
functions and env assertions (v0.1.3 ``telecom/user_data_model.py`` + ``user_tools.py``).

The user DB is ``{"device": {...}, "surroundings": {...}}``: ``user_db.toml`` merged over tau2's
model defaults (:func:`default_user_db`); enum values are stored as their strings (``"5G"``,
``"connected"``, …). :func:`simulate_network_search` re-derives the connection from the SIM,
the network-mode preference, airplane mode, APN and line status; speed test and MMS follow
tau2's rules. The init functions (``set_user_info``, ``turn_data_off``, ``break_apn_settings``,
``lock_sim_card``, …) are run by task ``initialization_actions``; ones that assert a
post-condition raise ``ToolError`` when it does not hold (a broken task). The user's own tools
are in :mod:`orchestra_jax.envs.tau2.telecom_user`.

tau2 quirk not reproduced: tau2 keeps one class-level ``VpnDetails`` object that ``break_vpn``
mutates, so after any ``break_vpn`` in a process every later ``connect_vpn`` gets poor
performance; here ``connect_vpn`` always yields tau2's default (excellent) details.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from orchestra_jax.envs.tau2.toolset import ToolError

__all__ = ["default_user_db", "normalise_user_db", "simulate_network_search",
           "mobile_data_working", "run_speed_test_raw", "can_send_mms_raw", "USER_FUNCTIONS",
           "USER_ASSERTIONS"]

_NETWORK_MODES = ("4g_5g_preferred", "4g_only", "3g_only", "2g_only")
_APN_NAMES = ("internet", "broken")
_DEFAULT_APN = {"apn_name": "internet", "reset_at_reboot": False, "mms_apn": "mms",
                "mmsc_url": "http://mms.carrier.com/mms/wapenc", "mms_proxy": None,
                "mms_port": None}
_DEFAULT_VPN = {"server_address": "192.168.1.1", "protocol": "OpenVPN",
                "server_performance": "excellent"}
_PERMISSIONS = ("sms", "storage", "phone", "network")


def _perms(**on: bool) -> dict:
    return {p: bool(on.get(p, False)) for p in _PERMISSIONS}


def default_user_db() -> dict:
    """tau2's ``TelecomUserDB()`` defaults as a dict."""
    return {
        "device": {
            "sim_card_status": "active", "sim_card_missing": False, "airplane_mode": False,
            "network_signal_strength": "good", "network_technology_connected": "5G",
            "network_connection_status": "connected", "battery_level": 80,
            "data_enabled": True, "roaming_enabled": False,
            "network_mode_preference": "4g_5g_preferred",
            "active_apn_settings": dict(_DEFAULT_APN), "wifi_enabled": False,
            "wifi_connected": False, "wifi_ssid": None, "wifi_signal_strength": "none",
            "wifi_calling_enabled": False, "wifi_calling_mms_over_wifi": False,
            "data_saver_mode": False, "vpn_enabled_setting": False, "vpn_connected": False,
            "vpn_details": None,
            "app_statuses": {
                "messaging": {"app_name": "messaging",
                              "permissions": _perms(sms=True, storage=True, phone=True)},
                "browser": {"app_name": "browser",
                            "permissions": _perms(network=True, storage=True)}},
        },
        "surroundings": {
            "name": None, "phone_number": None, "is_abroad": False, "roaming_allowed": False,
            "signal_strength": {"2G": "poor", "3G": "fair", "4G": "good", "5G": "excellent"},
            "mobile_data_usage_exceeded": False, "line_active": True, "payment_request": None,
        },
    }


def _merge(base: dict, update: dict) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)


def normalise_user_db(user_db: Optional[dict]) -> dict:
    """``user_db.toml`` (or any partial user DB) over the model defaults."""
    out = default_user_db()
    _merge(out, user_db or {})
    for app in out["device"]["app_statuses"].values():
        perms = _perms()
        perms.update(app.get("permissions") or {})
        app["permissions"] = perms
    return out


# ---------------------------------------------------------------------------------------------
# simulation core
# ---------------------------------------------------------------------------------------------
def _dev(udb: dict) -> dict:
    return udb["device"]


def _sim_status(d: dict) -> str:
    return "missing" if d["sim_card_missing"] else d["sim_card_status"]


def _no_service(d: dict) -> None:
    d["network_connection_status"] = "no_service"
    d["network_technology_connected"] = "none"
    d["network_signal_strength"] = "none"


def simulate_network_search(udb: dict) -> None:
    d, sur = udb["device"], udb["surroundings"]
    if _sim_status(d) == "active":
        d["network_connection_status"] = "connected"
        tech = {"4g_only": "4G", "3g_only": "3G", "2g_only": "2G"}.get(d["network_mode_preference"])
        if d["network_mode_preference"] == "4g_5g_preferred":
            tech = "4G" if sur["signal_strength"].get("5G", "none") == "none" else "5G"
        tech = tech or "4G"
        d["network_technology_connected"] = tech
        d["network_signal_strength"] = sur["signal_strength"].get(tech, "none")
    else:
        _no_service(d)
    if (d["airplane_mode"] or d["active_apn_settings"]["apn_name"] == "broken"
            or not sur["line_active"]):
        _no_service(d)


def mobile_data_working(udb: dict) -> bool:
    d, sur = udb["device"], udb["surroundings"]
    if d["airplane_mode"] or d["network_signal_strength"] == "none":
        return False
    if d["network_connection_status"] == "no_service":
        return False
    if sur["is_abroad"] and (not d["roaming_enabled"] or not sur["roaming_allowed"]):
        return False
    return bool(d["data_enabled"]) and not sur["mobile_data_usage_exceeded"]


_SPEED_RANGE = {"2G": (0.1, 0.4), "3G": (1.0, 5.0), "4G": (10.0, 100.0), "5G": (50.0, 500.0),
                "none": (0.0, 0.0)}
_SIGNAL_FACTOR = {"poor": 0.2, "fair": 0.5, "good": 0.8, "excellent": 1.0, "none": 0.0}


def run_speed_test_raw(udb: dict) -> tuple[Optional[float], str]:
    """(Mbps, description) as tau2's ``_run_speed_test``; (None, "No Connection") offline."""
    if not mobile_data_working(udb):
        return None, "No Connection"
    d = udb["device"]
    factor = 1.0
    if d["vpn_connected"] and d["vpn_details"] and \
            d["vpn_details"].get("server_performance") == "poor":
        factor = 0.1
    if d["data_saver_mode"]:
        factor *= 0.2
    lo, hi = _SPEED_RANGE.get(d["network_technology_connected"], (0.0, 0.0))
    speed = round((lo + hi) / 2.0 * _SIGNAL_FACTOR.get(d["network_signal_strength"], 0.0)
                  * factor, 2)
    for bound, desc in ((1, "Very Poor"), (5, "Poor"), (25, "Fair"), (100, "Good")):
        if speed < bound:
            return speed, desc
    return speed, "Excellent"


def can_send_mms_raw(udb: dict) -> bool:
    d = udb["device"]
    if not mobile_data_working(udb) or d["network_technology_connected"] == "2G":
        return False
    if d["wifi_calling_enabled"] and d["wifi_calling_mms_over_wifi"]:
        return False
    if d["active_apn_settings"]["mmsc_url"] is None:
        return False
    app = d["app_statuses"].get("messaging")
    return app is not None and bool(app["permissions"]["storage"] and app["permissions"]["sms"])


_SIGNAL_ICON = {"none": "📵 No Signal", "poor": "📶¹ Poor", "fair": "📶² Fair",
                "good": "📶³ Good", "excellent": "📶⁴ Excellent"}


def _status_bar(udb: dict) -> str:
    d = udb["device"]
    parts = []
    if d["airplane_mode"]:
        parts.append("✈️ Airplane Mode")
    else:
        parts.append(_SIGNAL_ICON.get(d["network_signal_strength"], "📵 No Signal"))
        if d["network_technology_connected"] != "none":
            parts.append(d["network_technology_connected"])
        if d["data_enabled"] and d["network_technology_connected"] != "none":
            parts.append("📱 Data Enabled")
            if d["data_saver_mode"]:
                parts.append("🔽 Data Saver")
        else:
            parts.append("📵 Data Disabled")
    if d["wifi_enabled"] and d["wifi_connected"]:
        parts.append(f"📡 Connected to {d['wifi_ssid']}" if d["wifi_ssid"] else "📡 Enabled")
    if d["vpn_connected"]:
        parts.append("🔒 VPN Connected")
    parts.append(f"🔋 {d['battery_level']}%")
    return " | ".join(parts)


def _with_bar(udb: dict, text: str) -> str:
    return f"{text}\nStatus Bar: {_status_bar(udb)}"


def _toggle(udb: dict, key: str, search: bool = True) -> bool:
    d = udb["device"]
    d[key] = not d[key]
    if search:
        simulate_network_search(udb)
    return d[key]


def _toggle_airplane(udb: dict) -> bool:
    d = udb["device"]
    was_on = d["airplane_mode"]
    d["airplane_mode"] = not was_on
    if was_on:
        d["network_connection_status"] = "searching"
    if not was_on or d["wifi_enabled"]:
        d["wifi_connected"], d["wifi_ssid"], d["wifi_signal_strength"] = False, None, "none"
    if not was_on and d["vpn_connected"]:
        _disconnect_vpn(udb)
    simulate_network_search(udb)
    return d["airplane_mode"]


def _disconnect_vpn(udb: dict) -> bool:
    d = udb["device"]
    if not d["vpn_connected"]:
        return False
    d["vpn_connected"], d["vpn_details"] = False, None
    return True


def _on_off(flag: Any) -> str:
    return "ON" if flag else "OFF"




# ---------------------------------------------------------------------------------------------
# environment functions (task initialisation; assert their post-conditions like tau2)
# ---------------------------------------------------------------------------------------------
def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ToolError(f"initialisation post-condition failed: {what}")


def set_user_info(udb: dict, name: str, phone_number: str) -> None:
    udb["surroundings"]["name"], udb["surroundings"]["phone_number"] = name, phone_number


def set_user_location(udb: dict, abroad: bool) -> None:
    udb["surroundings"]["is_abroad"] = abroad


def _force(udb: dict, toggler, key: str, want: bool) -> None:
    if toggler(udb) != want:
        toggler(udb)


def turn_airplane_mode_on(udb: dict) -> str:
    _force(udb, _toggle_airplane, "airplane_mode", True)
    return "Airplane Mode is now ON."


def turn_airplane_mode_off(udb: dict) -> str:
    _force(udb, _toggle_airplane, "airplane_mode", False)
    return "Airplane Mode is now OFF."


def unseat_sim_card(udb: dict) -> str:
    udb["device"]["sim_card_missing"] = True
    simulate_network_search(udb)
    _require(_sim_status(udb["device"]) == "missing", "SIM missing")
    return "SIM card un-seated successfully."


def lock_sim_card(udb: dict, mode: str) -> str:
    if mode in ("pin", "puk"):
        udb["device"]["sim_card_status"] = f"locked_{mode}"
    simulate_network_search(udb)
    return f"SIM card locked successfully in {mode} mode."


def turn_data_on(udb: dict) -> str:
    udb["device"]["data_enabled"] = True
    return "Data connection restored."


def turn_data_off(udb: dict) -> str:
    _force(udb, lambda u: _toggle(u, "data_enabled"), "data_enabled", False)
    return "Data connection broken."


def turn_roaming_on(udb: dict) -> str:
    _force(udb, lambda u: _toggle(u, "roaming_enabled"), "roaming_enabled", True)
    return "Data Roaming is now ON."


def turn_roaming_off(udb: dict) -> str:
    _force(udb, lambda u: _toggle(u, "roaming_enabled"), "roaming_enabled", False)
    return "Data Roaming is now OFF."


def turn_data_saver_mode_on(udb: dict) -> str:
    _force(udb, lambda u: _toggle(u, "data_saver_mode", False), "data_saver_mode", True)
    return "Data Saver Mode is now ON."


def turn_data_saver_mode_off(udb: dict) -> str:
    _force(udb, lambda u: _toggle(u, "data_saver_mode", False), "data_saver_mode", False)
    return "Data Saver Mode is now OFF."


def break_apn_settings(udb: dict) -> str:
    udb["device"]["active_apn_settings"]["apn_name"] = "broken"
    simulate_network_search(udb)
    _require(udb["device"]["network_connection_status"] == "no_service", "no service")
    return "APN settings broken. Please call reset_apn_settings() to fix."


def break_apn_mms_setting(udb: dict) -> str:
    udb["device"]["active_apn_settings"]["mmsc_url"] = None
    _require(not can_send_mms_raw(udb), "MMS broken")
    return "APN MMS setting broken. Please call reset_apn_settings() to fix."


def set_wifi_calling(udb: dict, enabled: bool, mms_over_wifi: Optional[bool] = None) -> str:
    d = udb["device"]
    if d["wifi_calling_enabled"] != enabled:
        d["wifi_calling_enabled"] = not d["wifi_calling_enabled"]
    msg = f"Wi-Fi Calling is now {_on_off(enabled)}."
    if mms_over_wifi is not None:
        d["wifi_calling_mms_over_wifi"] = mms_over_wifi
        msg += f"\nMMS over Wi-Fi is now {_on_off(mms_over_wifi)}."
    return msg


def connect_vpn_state(udb: dict) -> bool:
    """Connect with tau2's default VPN details; ``False`` when already connected."""
    d = udb["device"]
    if d["vpn_connected"]:
        return False
    d["vpn_connected"], d["vpn_details"] = True, dict(_DEFAULT_VPN)
    return True


def break_vpn(udb: dict) -> str:
    connect_vpn_state(udb)
    udb["device"]["vpn_details"]["server_performance"] = "poor"
    return "VPN connection broken."


def remove_app_permission(udb: dict, app_name: str, permission: str) -> tuple[bool, str]:
    app = udb["device"]["app_statuses"].get(app_name)
    permission = permission.lower()
    if not app:
        return False, f"App '{app_name}' not found. Cannot remove permission."
    if permission not in app["permissions"]:
        return False, f"Permission '{permission}' not tracked for app '{app_name}'."
    app["permissions"][permission] = False
    return True, f"Permission '{permission}' removed from app '{app_name}'."


# -- assertions ------------------------------------------------------------------------------
def assert_airplane_mode_status(udb: dict, expected_status: bool) -> bool:
    return udb["device"]["airplane_mode"] == expected_status


def assert_service_status(udb: dict, expected_status: str) -> bool:
    valid = ("connected", "searching", "no_service", "emergency_only")
    if expected_status not in valid:
        raise ToolError(f"{expected_status!r} is not a valid NetworkStatus")
    return udb["device"]["network_connection_status"] == expected_status


def assert_mobile_data_status(udb: dict, expected_status: bool) -> bool:
    return mobile_data_working(udb) == expected_status


def assert_mobile_roaming_status(udb: dict, expected_status: bool) -> bool:
    return udb["device"]["roaming_enabled"] == expected_status


def assert_mobile_data_saver_mode_status(udb: dict, expected_status: bool) -> bool:
    return udb["device"]["data_saver_mode"] == expected_status


def assert_internet_speed(udb: dict, expected_speed: float,
                          expected_desc: Optional[str] = None) -> bool:
    speed, desc = run_speed_test_raw(udb)
    speed = speed or 0.0
    if expected_desc is None:
        return speed >= expected_speed
    return speed >= expected_speed and desc.lower() == expected_desc.lower()


def assert_internet_not_excellent(udb: dict) -> bool:
    return run_speed_test_raw(udb)[1].lower() != "excellent"


def assert_can_send_mms(udb: dict, expected_status: bool) -> bool:
    return can_send_mms_raw(udb) == expected_status


def assert_mobile_data_usage_exceeded(udb: dict, expected_status: bool) -> bool:
    return udb["surroundings"]["mobile_data_usage_exceeded"] == expected_status


USER_FUNCTIONS = {f.__name__: f for f in (
    set_user_info, set_user_location, turn_airplane_mode_on, turn_airplane_mode_off,
    unseat_sim_card, lock_sim_card, turn_data_on, turn_data_off, turn_roaming_on,
    turn_roaming_off, turn_data_saver_mode_on, turn_data_saver_mode_off, break_apn_settings,
    break_apn_mms_setting, set_wifi_calling, break_vpn, remove_app_permission,
    simulate_network_search)}
USER_ASSERTIONS = {f.__name__: f for f in (
    assert_airplane_mode_status, assert_service_status, assert_mobile_data_status,
    assert_mobile_roaming_status, assert_mobile_data_saver_mode_status, assert_internet_speed,
    assert_internet_not_excellent, assert_can_send_mms, assert_mobile_data_usage_exceeded)}
