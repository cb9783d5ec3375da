"""Drive the callwarden simulator with the official Vobiz Python SDK.

Usage: compat.py BASE_URL AUTH_ID AUTH_TOKEN FLAT_UUID LEGACY_UUID SPEAK_UUID

BASE_URL is http://127.0.0.1:PORT/api/v1. Exits 0 when every check passes;
any failed check raises, so the exit status is non-zero with a traceback.
"""

import sys

import vobiz
from vobiz.exceptions import (
    AuthenticationError,
    ResourceNotFoundError,
    ValidationError,
)


def client_for(base_url, auth_id, token):
    client = vobiz.RestClient(auth_id=auth_id, auth_token=token)
    # The SDK has no base-URL option; this is the documented way in.
    client.base_uri = base_url + "/Account"
    return client


def expect(error_type, action, what):
    try:
        action()
    except error_type:
        return
    raise AssertionError("%s: expected %s" % (what, error_type.__name__))


def main():
    base_url, auth_id, token, flat_uuid, legacy_uuid, speak_uuid = sys.argv[1:7]
    client = client_for(base_url, auth_id, token)

    live = client.calls.list_live()
    assert flat_uuid in live.calls and legacy_uuid in live.calls, live
    assert isinstance(live.api_id, str) and len(live.api_id) == 36, live

    flat = client.calls.get_live(flat_uuid)
    assert flat.call_uuid == flat_uuid, flat
    assert flat.call_status == "in-progress", flat
    assert flat.session_start, flat

    legacy = client.calls.get_live(legacy_uuid)
    assert legacy.calls[0].call_uuid == legacy_uuid, legacy
    assert legacy.calls[0].call_state == "ACTIVE", legacy

    spoken = client.calls.speak_text(speak_uuid, "This call will end in one minute.", legs="both")
    assert spoken.message == "speak started", spoken
    expect(ValidationError, lambda: client.calls.speak_text(speak_uuid, "x" * 1001), "speak too long")
    assert client.calls.stop_speak(speak_uuid) is None

    # The final record does not exist while the call is live.
    expect(ResourceNotFoundError, lambda: client.calls.get(flat_uuid), "CDR of a live call")

    assert client.calls.hangup(flat_uuid) is None
    expect(ResourceNotFoundError, lambda: client.calls.hangup(flat_uuid), "second hangup")
    expect(ResourceNotFoundError, lambda: client.calls.get_live(flat_uuid), "live detail after hangup")

    cdr = client.calls.get(flat_uuid)
    assert cdr.call_uuid == flat_uuid, cdr
    assert cdr.hangup_source == "API", cdr
    assert cdr.hangup_cause_code == 16, cdr
    assert cdr.hangup_cause_name == "NORMAL_CLEARING", cdr

    after = client.calls.list_live()
    assert flat_uuid not in after.calls, after

    wrong = client_for(base_url, auth_id, token + "-wrong")
    expect(AuthenticationError, wrong.calls.list_live, "wrong token")

    print("sdk compat: ok")


if __name__ == "__main__":
    main()
