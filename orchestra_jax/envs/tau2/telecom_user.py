"""tau2-bench telecom, user side: the 30 tools the customer uses on their own phone (v0.1.3
``telecom/user_tools.py``, the ``@is_tool`` ones).

Dual control: the simulated user acts on their device with these tools (requestor ``"user"``);
the agent only sees what the user reports. Observations are tau2's strings (status bar, network
status, speed test, …), which the user simulator grounds its replies on. The device state,
simulation core, task init functions and env assertions are in
:mod:`orchestra_jax.envs.tau2.telecom_device`.
"""

from __future__ import annotations

from typing import Any, Optional

from orchestra_jax.envs.tau2.telecom_device import (
    _APN_NAMES, _DEFAULT_APN, _NETWORK_MODES, USER_ASSERTIONS, USER_FUNCTIONS, _disconnect_vpn,
    _on_off, _sim_status, _status_bar, _toggle, _toggle_airplane, _with_bar, can_send_mms_raw,
    connect_vpn_state, default_user_db, normalise_user_db, run_speed_test_raw,
    simulate_network_search)
from orchestra_jax.envs.tau2.toolset import (READ, WRITE, FunctionTool, ToolError, ToolSet,
                                             as_pyd_int)

__all__ = ["telecom_user_toolset", "default_user_db", "normalise_user_db"]

# ---------------------------------------------------------------------------------------------
# user tools
# ---------------------------------------------------------------------------------------------
def check_status_bar(udb: dict) -> str:
    return f"Status Bar: {_status_bar(udb)}"


def check_network_status(udb: dict) -> str:
    d = udb["device"]
    lines = [f"Airplane Mode: {_on_off(d['airplane_mode'])}",
             f"SIM Card Status: {_sim_status(d)}",
             f"Cellular Connection: {d['network_connection_status']}",
             f"Cellular Signal: {d['network_signal_strength']}",
             f"Cellular Network Type: {d['network_technology_connected']}",
             f"Mobile Data Enabled: {'Yes' if d['data_enabled'] else 'No'}",
             f"Data Roaming Enabled: {'Yes' if d['roaming_enabled'] else 'No'}",
             f"Wi-Fi Radio: {_on_off(d['wifi_enabled'])}",
             f"Wi-Fi Connected: {'Yes' if d['wifi_connected'] else 'No'}"]
    if d["wifi_connected"]:
        lines.append(f"Connected Wi-Fi Network: {d['wifi_ssid']}")
    return "\n".join(lines)


def check_network_mode_preference(udb: dict) -> str:
    return f"Network Mode Preference: {udb['device']['network_mode_preference']}"


def set_network_mode_preference(udb: dict, mode: Any) -> str:
    if isinstance(mode, str) and mode not in _NETWORK_MODES:
        return (f"Failed to set network mode: '{mode}' is not a valid option. Please use one "
                f"of: {', '.join(_NETWORK_MODES)}\nStatus Bar: {_status_bar(udb)}")
    udb["device"]["network_mode_preference"] = mode
    simulate_network_search(udb)
    if not isinstance(mode, str):  # tau2 stores a non-string as given, then fails on ``.value``
        raise ToolError(f"'{type(mode).__name__}' object has no attribute 'value'")
    return _with_bar(udb, f"Preferred Network Mode set to: {mode}")


_SPEED_ADVICE = {
    "Very Poor": "Connection is very slow. Basic web browsing might be difficult.",
    "Poor": "Connection is slow. Web browsing may be sluggish, streaming difficult.",
    "Fair": "Connection is okay for web browsing and some standard definition streaming.",
    "Good": "Connection is good for most activities, including HD streaming.",
    "Excellent": "Connection is very fast."}


def run_speed_test(udb: dict) -> str:
    speed, desc = run_speed_test_raw(udb)
    if speed is None:
        return f"Speed test failed: {desc or 'Could not determine speed'}."
    return f"Speed Test Result: {speed:.2f} Mbps ({desc}). {_SPEED_ADVICE.get(desc, '')}"


def toggle_airplane_mode(udb: dict) -> str:
    return _with_bar(udb, f"Airplane Mode is now {_on_off(_toggle_airplane(udb))}.")


def check_sim_status(udb: dict) -> str:
    status = _sim_status(udb["device"])
    return {"active": "Your SIM card is active and working.",
            "missing": "No SIM card detected in the phone.",
            "locked_pin": "The SIM card is locked with a PIN code.",
            "locked_puk": "The SIM card is locked with a PUK code."}.get(
        status, f"Unknown SIM status: {status}")


def reseat_sim_card(udb: dict) -> str:
    udb["device"]["sim_card_missing"] = False
    simulate_network_search(udb)
    return _with_bar(udb, "SIM card re-seated successfully.")


def toggle_data(udb: dict) -> str:
    return _with_bar(udb, f"Mobile Data is now {_on_off(_toggle(udb, 'data_enabled'))}.")


def toggle_roaming(udb: dict) -> str:
    return _with_bar(udb, f"Data Roaming is now {_on_off(_toggle(udb, 'roaming_enabled'))}.")


def check_data_restriction_status(udb: dict) -> str:
    return ("Data Saver mode is ON (limits data usage)." if udb["device"]["data_saver_mode"]
            else "Data Saver mode is OFF.")


def toggle_data_saver_mode(udb: dict) -> str:
    state = _toggle(udb, "data_saver_mode", search=False)
    return _with_bar(udb, f"Data Saver Mode is now {_on_off(state)}.")


def check_apn_settings(udb: dict) -> str:
    apn = udb["device"]["active_apn_settings"]
    return (f"Current APN Name: {apn['apn_name'] or 'Not Set'}\nMMSC URL (for picture "
            f"messages): {apn['mmsc_url'] or 'Not Set'}\n(These are technical settings, usually "
            f"best left unchanged.)")


def _opt_str(value: Any, field: str) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    raise ToolError(f"{field}: Input should be a valid string")


def _lax_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "t", "yes", "y", "on"):
            return True
        if low in ("0", "false", "f", "no", "n", "off"):
            return False
    raise ToolError(f"{field}: Input should be a valid boolean")


def _apn_from_dict(raw: dict) -> dict:
    """pydantic ``APNSettings(**raw)``: known fields only, types checked, defaults filled."""
    extra = sorted(set(raw) - set(_DEFAULT_APN))
    if extra:
        raise ToolError(f"APNSettings: extra inputs are not permitted: {extra}")
    apn = dict(_DEFAULT_APN)
    if "apn_name" in raw:
        if raw["apn_name"] not in _APN_NAMES:
            raise ToolError("apn_name: Input should be 'internet' or 'broken'")
        apn["apn_name"] = raw["apn_name"]
    if "reset_at_reboot" in raw:
        apn["reset_at_reboot"] = _lax_bool(raw["reset_at_reboot"], "reset_at_reboot")
    for f in ("mms_apn", "mmsc_url", "mms_proxy"):
        if f in raw:
            apn[f] = _opt_str(raw[f], f)
    if "mms_port" in raw:
        apn["mms_port"] = None if raw["mms_port"] is None else as_pyd_int(raw["mms_port"],
                                                                         "mms_port")
    return apn


def set_apn_settings(udb: dict, apn_settings: Any) -> str:
    if not isinstance(apn_settings, dict):
        raise ToolError("apn_settings must be an object with APN fields")
    apn = _apn_from_dict(apn_settings)
    udb["device"]["active_apn_settings"] = apn
    simulate_network_search(udb)
    return _with_bar(udb, f"APN settings set to: {apn['apn_name']}")


def reset_apn_settings(udb: dict) -> str:
    udb["device"]["active_apn_settings"]["reset_at_reboot"] = True
    simulate_network_search(udb)
    return _with_bar(udb, "APN settings will reset at reboot.")


def check_wifi_status(udb: dict) -> str:
    d = udb["device"]
    if not d["wifi_enabled"]:
        return "Wi-Fi is turned OFF."
    if d["wifi_connected"]:
        return (f"Wi-Fi is ON and connected to '{d['wifi_ssid']}'. Signal strength: "
                f"{d['wifi_signal_strength']}.")
    return "Wi-Fi is ON but not connected to any network."


def toggle_wifi(udb: dict) -> str:
    d = udb["device"]
    if d["airplane_mode"]:
        return _with_bar(udb, "Cannot change Wi-Fi settings while Airplane Mode is ON.")
    d["wifi_enabled"] = not d["wifi_enabled"]
    if not d["wifi_enabled"]:
        d["wifi_connected"], d["wifi_ssid"], d["wifi_signal_strength"] = False, None, "none"
    return _with_bar(udb, f"Wi-Fi is now {_on_off(d['wifi_enabled'])}.")


def check_wifi_calling_status(udb: dict) -> str:
    return f"Wi-Fi Calling is currently turned {_on_off(udb['device']['wifi_calling_enabled'])}."


def toggle_wifi_calling(udb: dict) -> str:
    state = _toggle(udb, "wifi_calling_enabled", search=False)
    return _with_bar(udb, f"Wi-Fi Calling is now {_on_off(state)}.")


def check_vpn_status(udb: dict) -> str:
    d = udb["device"]
    if d["vpn_connected"]:
        det = d["vpn_details"]
        if det:
            shown = {"server_address": det.get("server_address"), "protocol": det.get("protocol"),
                     "server_performance": _PerfRepr(det.get("server_performance"))}
            return f"VPN is ON and connected. Details: {shown}"
        return "VPN is ON and connected (no specific details available)."
    if d["vpn_enabled_setting"]:
        return "VPN is turned ON in settings, but currently not connected."
    return "VPN is turned OFF."


class _PerfRepr(str):
    """Renders like tau2's ``PerformanceLevel`` enum inside a dict repr."""

    def __repr__(self) -> str:
        return f"<PerformanceLevel.{str(self).upper()}: '{self}'>"


def connect_vpn(udb: dict) -> str:
    if not connect_vpn_state(udb):
        return "VPN already connected."
    return _with_bar(udb, "VPN connected successfully.")


def disconnect_vpn(udb: dict) -> str:
    done = _disconnect_vpn(udb)
    return _with_bar(udb, "VPN disconnected successfully." if done
                     else "No active VPN connection to disconnect.")


def check_installed_apps(udb: dict) -> str:
    return ("The following apps are installed on the phone: "
            + ", ".join(udb["device"]["app_statuses"]))


def _allowed(perms: dict) -> list[str]:
    return [name.replace("_", " ").lower() for name, on in perms.items() if on]


def check_app_status(udb: dict, app_name: str) -> str:
    app = udb["device"]["app_statuses"].get(app_name)
    if not app:
        return f"App '{app_name}' not found on this phone."
    lines = [f"Status for App: {app_name}"]
    allowed = _allowed(app["permissions"])
    if not allowed:
        lines.append(" - Permissions: None granted.")
    else:
        lines.append(" - Permissions Granted:")
        lines += [f"   - {p}" for p in allowed]
    return "\n".join(lines)


def check_app_permissions(udb: dict, app_name: str) -> str:
    app = udb["device"]["app_statuses"].get(app_name)
    if not app:
        return f"App '{app_name}' not found on this phone."
    allowed = _allowed(app["permissions"])
    if not allowed:
        return f"App '{app_name}' currently has no permissions granted."
    return f"App '{app_name}' has permission for: {', '.join(allowed)}."


def grant_app_permission(udb: dict, app_name: str, permission: str) -> str:
    app = udb["device"]["app_statuses"].get(app_name)
    permission = permission.lower()
    if not app:
        ok, msg = False, f"App '{app_name}' not found. Cannot grant permission."
    elif permission not in app["permissions"]:
        ok, msg = False, (f"Permission '{permission}' not tracked for app '{app_name}', "
                          f"available permissions: {list(app['permissions'])}")
    else:
        app["permissions"][permission] = True
        ok, msg = True, f"Permission '{permission}' granted to app '{app_name}'."
    return _with_bar(udb, f"{'Success. ' if ok else 'Error. '}{msg}")


def can_send_mms(udb: dict) -> str:
    return ("Your messaging app can send MMS messages." if can_send_mms_raw(udb)
            else "Your messaging app cannot send MMS messages.")


def reboot_device(udb: dict) -> str:
    d = udb["device"]
    lines = []
    if d["active_apn_settings"]["reset_at_reboot"]:
        lines.append("Resetting APN settings...")
        d["active_apn_settings"] = dict(_DEFAULT_APN)
    lines.append("Restarting network services...")
    d["network_connection_status"] = "searching"
    simulate_network_search(udb)
    return _with_bar(udb, "\n".join(lines))


def check_payment_request(udb: dict) -> str:
    req = udb["surroundings"]["payment_request"]
    if req is None:
        return "No payment request has been made."
    return f"You have a payment request for bill {req['bill_id']} of {req['amount_due']} USD."


def make_payment(udb: dict) -> str:
    req = udb["surroundings"]["payment_request"]
    if req is None:
        return "You do not have a payment request."
    req["paid"] = True
    return f"Payment of {req['amount_due']} USD has been made for bill {req['bill_id']}."




# ---------------------------------------------------------------------------------------------
_NO_ARGS = {"type": "object", "properties": {}, "required": []}


def _args(**props: str) -> dict:
    return {"type": "object", "properties": {k: {"type": "string", "description": v}
                                             for k, v in props.items()},
            "required": list(props)}


_USER_TOOLS = [
    ("check_status_bar", READ, check_status_bar, "Shows what icons are currently visible in your "
     "phone's status bar (the area at the top of the screen). Displays network signal strength, "
     "mobile data status (enabled, disabled, data saver), Wi-Fi status, and battery level.",
     _NO_ARGS),
    ("check_network_status", READ, check_network_status, "Checks your phone's connection status "
     "to cellular networks and Wi-Fi. Shows airplane mode status, signal strength, network type, "
     "whether mobile data is enabled, and whether data roaming is enabled.", _NO_ARGS),
    ("check_network_mode_preference", READ, check_network_mode_preference,
     "Shows the current network mode preference.", _NO_ARGS),
    ("set_network_mode_preference", WRITE, set_network_mode_preference, "Changes the type of "
     "cellular network your phone prefers to connect to (e.g., 5G, LTE/4G, 3G). Higher-speed "
     "networks (LTE/5G) provide faster data but may use more battery.",
     {"type": "object", "properties": {"mode": {"type": "string", "enum": list(_NETWORK_MODES),
                                                "description": "The network mode preference."}},
      "required": ["mode"]}),
    ("run_speed_test", READ, run_speed_test, "Measures your current internet connection speed "
     "(download speed). Provides information about connection quality and what activities it "
     "can support.", _NO_ARGS),
    ("toggle_airplane_mode", WRITE, toggle_airplane_mode, "Toggles Airplane Mode ON or OFF. When "
     "ON, it disconnects all wireless communications including cellular, Wi-Fi, and Bluetooth.",
     _NO_ARGS),
    ("check_sim_status", READ, check_sim_status, "Checks if your SIM card is working correctly "
     "and displays its current status. Shows if the SIM is active, missing, or locked with a PIN "
     "or PUK code.", _NO_ARGS),
    ("reseat_sim_card", WRITE, reseat_sim_card, "Simulates removing and reinserting your SIM "
     "card. This can help resolve recognition issues.", _NO_ARGS),
    ("toggle_data", WRITE, toggle_data, "Toggles your phone's mobile data connection ON or OFF. "
     "Controls whether your phone can use cellular data for internet access when Wi-Fi is "
     "unavailable.", _NO_ARGS),
    ("toggle_roaming", WRITE, toggle_roaming, "Toggles Data Roaming ON or OFF. When ON, your "
     "phone can use data networks in areas outside your carrier's coverage.", _NO_ARGS),
    ("check_data_restriction_status", READ, check_data_restriction_status, "Checks if your "
     "phone has any data-limiting features active. Shows if Data Saver mode is on.", _NO_ARGS),
    ("toggle_data_saver_mode", WRITE, toggle_data_saver_mode, "Toggles Data Saver mode ON or "
     "OFF. When ON, it reduces data usage, which may affect data speed.", _NO_ARGS),
    ("check_apn_settings", READ, check_apn_settings, "Checks the technical APN settings your "
     "phone uses to connect to your carrier's mobile data network. Shows current APN name and "
     "MMSC URL for picture messaging.", _NO_ARGS),
    ("set_apn_settings", WRITE, set_apn_settings, "Sets the APN settings for the phone.",
     {"type": "object", "properties": {"apn_settings": {
         "type": "object", "description": "APN settings: apn_name ('internet'|'broken'), "
         "reset_at_reboot, mms_apn, mmsc_url, mms_proxy, mms_port."}},
      "required": ["apn_settings"]}),
    ("reset_apn_settings", WRITE, reset_apn_settings,
     "Resets your APN settings to the default settings.", _NO_ARGS),
    ("check_wifi_status", READ, check_wifi_status, "Checks your Wi-Fi connection status. Shows "
     "if Wi-Fi is turned on, which network you're connected to (if any), and the signal "
     "strength.", _NO_ARGS),
    ("toggle_wifi", WRITE, toggle_wifi, "Toggles your phone's Wi-Fi radio ON or OFF. Controls "
     "whether your phone can discover and connect to wireless networks for internet access.",
     _NO_ARGS),
    ("check_wifi_calling_status", READ, check_wifi_calling_status, "Checks if Wi-Fi Calling is "
     "enabled on your device. This feature allows you to make and receive calls over a Wi-Fi "
     "network instead of using the cellular network.", _NO_ARGS),
    ("toggle_wifi_calling", WRITE, toggle_wifi_calling, "Toggles Wi-Fi Calling ON or OFF. This "
     "feature allows you to make and receive calls over Wi-Fi instead of the cellular network, "
     "which can help in areas with weak cellular signal.", _NO_ARGS),
    ("check_vpn_status", READ, check_vpn_status, "Checks if you're using a VPN (Virtual Private "
     "Network) connection. Shows if a VPN is active, connected, and displays any available "
     "connection details.", _NO_ARGS),
    ("connect_vpn", WRITE, connect_vpn, "Connects to your VPN (Virtual Private Network).",
     _NO_ARGS),
    ("disconnect_vpn", WRITE, disconnect_vpn, "Disconnects any active VPN (Virtual Private "
     "Network) connection. Stops routing your internet traffic through a VPN server, which might "
     "affect connection speed or access to content.", _NO_ARGS),
    ("check_installed_apps", READ, check_installed_apps,
     "Returns the name of all installed apps on the phone.", _NO_ARGS),
    ("check_app_status", READ, check_app_status, "Checks detailed information about a specific "
     "app. Shows its permissions and background data usage settings.",
     _args(app_name="The name of the app.")),
    ("check_app_permissions", READ, check_app_permissions, "Checks what permissions a specific "
     "app currently has. Shows if the app has access to features like storage, camera, "
     "location, etc.", _args(app_name="The name of the app.")),
    ("grant_app_permission", WRITE, grant_app_permission, "Gives a specific permission to an "
     "app (like access to storage, camera, or location). Required for some app functions to "
     "work properly.", _args(app_name="The name of the app to grant the permission to.",
                             permission="The permission to grant, should be lowercase.")),
    ("can_send_mms", READ, can_send_mms,
     "Checks if the default messaging app can send MMS messages.", _NO_ARGS),
    ("reboot_device", WRITE, reboot_device, "Restarts your phone completely. This can help "
     "resolve many temporary software glitches by refreshing all running services and "
     "connections.", _NO_ARGS),
    ("check_payment_request", READ, check_payment_request,
     "Checks if the agent has sent you a payment request.", _NO_ARGS),
    ("make_payment", WRITE, make_payment,
     "Makes a payment for the bill that the agent has sent you.", _NO_ARGS),
]

def telecom_user_toolset() -> ToolSet:
    """The 30 user (device) tools, requestor ``"user"``, + env functions and assertions."""
    tools = [FunctionTool(name, desc, params, fn, ttype, requestor="user")
             for name, ttype, fn, desc, params in _USER_TOOLS]
    return ToolSet(tools, assertions=USER_ASSERTIONS, functions=USER_FUNCTIONS,
                   strict_schema=False)
