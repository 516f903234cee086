"""The web page in a real browser (issue 12): the system Chromium, headless, against a real
server on loopback (real TLS, a real SQLite file), with the device agent as a real process.

The browser is driven from a worker thread (Selenium blocks) while the server runs in the
test's event loop.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from selenium.webdriver.common.by import By

from pairing.protocol.jid import JID
from pairing.xmpp.connection import ServerAddress, TrustAnchor, login, logout, make_client
from server_ext.admin.token_issuer import issue_token
from server_ext.model import DeviceState, TokenState
from server_ext.policy.tokens import TokenRules
from tests.integration.conftest import PASSWORD, RunningServer, ServerFactory
from tests.integration.test_device_revocation import identity
from tests.support import browser

BIN = Path(sys.executable).parent
#: Where the screenshots of the main pages go: docs/web/ when WEB_SCREENSHOTS=1 (how the ones
#: in the repository were made), else the test's own temporary directory.
DOCS = Path(__file__).resolve().parents[2] / "docs" / "web"

pytestmark = [pytest.mark.timeout(120), pytest.mark.browser]


class Page:
    """One browser and the server's web origin; every call runs off the event loop."""

    def __init__(self, driver: Any, origin: str, shots: Path) -> None:
        self.driver = driver
        self.origin = origin
        self.shots = DOCS if os.environ.get("WEB_SCREENSHOTS") == "1" else shots

    async def do(self, action: Callable[[Any], Any]) -> Any:
        return await asyncio.to_thread(action, self.driver)

    async def open(self, path: str) -> None:
        await self.do(lambda d: d.get(self.origin + path))

    async def text(self, css: str) -> str:
        """The element's text once it is on the page (a click's navigation may still run)."""
        await self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, css))
        return str(await self.do(lambda d: browser.text_of(d, css)))

    async def texts(self, css: str) -> list[str]:
        """The text of every element ``css`` selects, in page order."""
        found = await self.do(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, css)])
        return [str(text) for text in found]

    async def click(self, css: str) -> None:
        await self.do(lambda d: d.find_element(By.CSS_SELECTOR, css).click())

    async def fill(self, css: str, value: str) -> None:
        def fill(d: Any) -> None:
            field = d.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(value)

        await self.do(fill)

    async def wait(self, check: Callable[[Any], Any], timeout: float = 10) -> Any:
        return await self.do(lambda d: browser.wait_for(d, check, timeout))

    async def sign_in(self, account: str, password: str = PASSWORD, path: str = "/login") -> None:
        await self.open(path)
        await self.fill("#account", account)
        await self.fill("#password", password)
        await self.click("#sign-in")

    async def screenshot(self, name: str) -> None:
        """The main pages (docs/web/ for the README and docs/web.md, see DOCS)."""
        self.shots.mkdir(parents=True, exist_ok=True)
        await self.do(lambda d: d.save_screenshot(str(self.shots / name)))

    def cookie(self, name: str) -> str | None:
        found = self.driver.get_cookie(name)
        return str(found["value"]) if found else None


@pytest.fixture
async def web(
    make_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[RunningServer, Page]]:
    browser.require_chromium()
    server = await make_server(https_port=0)
    server.add_user("alice")
    server.add_user("root", admin=True)
    profile = tmp_path / "chromium"
    driver = await asyncio.to_thread(browser.chromium, profile)
    try:
        yield server, Page(driver, server.server.web_origin, tmp_path / "screenshots")
    finally:
        await asyncio.to_thread(browser.close, driver, profile)


def https_connection(server: RunningServer) -> http.client.HTTPSConnection:
    """A connection to the web face from outside the browser (its certificate is self-signed;
    what is checked here is the page, not the server's identity)."""
    address = server.server.https_address
    assert address is not None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(address.host, address.port, context=context)


def https_post(
    server: RunningServer, path: str, fields: dict[str, str], cookie: str | None
) -> tuple[int, str]:
    """A form post from outside the browser (another site's forgery, or a script)."""
    connection = https_connection(server)
    body = "&".join(f"{k}={v}" for k, v in fields.items())
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = f"__Host-session={cookie}"
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, text


def https_get(server: RunningServer, path: str, cookie: str | None) -> tuple[int, str]:
    """A page fetched from outside the browser with the given session cookie."""
    connection = https_connection(server)
    connection.request(
        "GET", path, headers={"Cookie": f"__Host-session={cookie}"} if cookie else {}
    )
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, text


async def enroll_device(
    server: RunningServer, tmp_path: Path, name: str = "bot"
) -> tuple[Any, int]:
    """A device of alice, registered by hand, logged in with EXTERNAL; (client, device id)."""
    jid = JID.parse(f"alice@localhost/{name}")
    cert, key, der = identity(tmp_path / name, jid)
    from pairing.protocol.identity import PeerCertificate

    record = server.registry.devices.add(
        jid.bare, name, PeerCertificate.parse(der), added_by="test", added_via="cli"
    )
    client = make_client(
        str(jid),
        server=ServerAddress(server.host, server.port),
        trust=TrustAnchor(fingerprint=server.fingerprint),
        certfile=cert,
        keyfile=key,
    )
    await login(client, timeout=10)
    return client, record.device.id


async def test_sign_in_and_a_wrong_password(web: tuple[RunningServer, Page]) -> None:
    server, page = web
    await page.sign_in("alice", "not the password")
    assert "wrong account or password" in await page.text("#login-error")
    assert page.cookie("__Host-session") is None
    await page.sign_in("alice")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    assert "Devices of alice@localhost" in await page.text("#devices caption")
    session = page.cookie("__Host-session")
    assert session is not None
    cookie = page.driver.get_cookie("__Host-session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    events = [e.event for e in server.registry.audit.events()]
    assert "login.failed" in events and "login.web" in events
    # Signing out ends the session on the server and the browser drops the cookie (a __Host-
    # cookie is only deleted by a Set-Cookie that is Secure itself).
    await page.click("form[action='/logout'] button")
    await page.wait(lambda d: d.get_cookie("__Host-session") is None)
    status, _ = await asyncio.to_thread(https_get, server, "/devices", session)
    assert status == 303  # the old id opens nothing: back to the sign-in page


async def test_a_form_without_the_session_csrf_token_is_refused(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    client, device_id = await enroll_device(server, tmp_path)
    await page.sign_in("alice")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    session = page.cookie("__Host-session")
    # The forged form carries the victim's cookie (as a browser without SameSite would) but
    # cannot know the page's token.
    for fields in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "guessed"}):
        status, text = await asyncio.to_thread(
            https_post, server, f"/devices/{device_id}/revoke", fields, session
        )
        assert status == 403 and "CSRF" in text
    device = server.registry.devices.get(device_id)
    assert device is not None and device.state is DeviceState.ACTIVE
    assert client.is_connected()
    await logout(client)


async def test_revoke_from_the_page_closes_the_live_session_within_a_second(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    client, device_id = await enroll_device(server, tmp_path)
    gone = asyncio.Event()
    client.add_event_handler("disconnected", lambda _: gone.set())
    await page.sign_in("alice")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    row = f"tr[data-device='{device_id}']"
    await page.wait(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.online").text == "online")
    await page.screenshot("devices.png")
    await page.click(f"#revoke-{device_id}")
    await page.wait(lambda d: d.find_elements(By.ID, "confirm-revoke"))
    await page.screenshot("revoke.png")
    started = time.monotonic()
    await page.click("#confirm-revoke")
    await asyncio.wait_for(gone.wait(), 5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the device was cut off after {elapsed:.2f} s"  # the issue's bound
    await page.wait(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.state").text == "revoked")
    device = server.registry.devices.get(device_id)
    assert device is not None and device.state is DeviceState.REVOKED


async def test_pair_by_the_qr_code_the_page_shows(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    _, page = web
    await page.sign_in("alice")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    await page.open("/pair")
    await page.fill("#resource", "camera")
    await page.click("#make-code")
    await page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#qr svg"))
    await page.screenshot("pair.png")
    png = await page.do(lambda d: d.find_element(By.ID, "qr").screenshot_as_png)
    (found,) = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    uri = found.text
    assert uri == await page.do(lambda d: d.find_element(By.ID, "uri").get_attribute("value"))
    process = await asyncio.create_subprocess_exec(
        str(BIN / "device-agent"), "--state-dir", str(tmp_path / "camera"),
        "enroll", "--uri", uri,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert "logs in as alice@localhost/camera" in out.decode()
    await page.open("/devices")
    assert "camera" in await page.text("#devices")


async def start_request(
    server: RunningServer, state: Path, resource: str = "sensor"
) -> tuple[asyncio.subprocess.Process, list[str]]:
    address = server.server.https_address
    assert address is not None
    process = await asyncio.create_subprocess_exec(
        str(BIN / "device-agent"), "--state-dir", str(state),
        "enroll", "--request", "--jid", f"alice@localhost/{resource}",
        "--server", f"{address.host}:{address.port}", "--pin", server.fingerprint,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    while not any(line.startswith("user code:") for line in lines):
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line, "device-agent ended before showing its code"
        lines.append(line.decode().rstrip("\n"))
    return process, lines


def shown(lines: list[str], label: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(label))


async def test_the_bot_shows_a_qr_code_the_owner_approves_and_it_appears_online(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    process, lines = await start_request(server, tmp_path / "sensor")
    url, code = shown(lines, "approve at"), shown(lines, "user code")
    assert url.startswith(page.origin + "/approve/")
    assert server.registry.devices.all() == []  # nothing is registered before approval
    # The owner opens the URL (the phone's camera would), signs in, and lands on the request.
    path = url.removeprefix(page.origin)
    await page.open(path)
    await page.wait(lambda d: "/login" in d.current_url)
    await page.sign_in("alice", path=f"/login?next={path}")
    await page.wait(lambda d: d.find_elements(By.ID, "approve"))
    assert await page.text("#user-code") == code
    assert await page.text("#req-name") == "sensor"
    await page.screenshot("approve.png")
    await page.do(lambda d: d.set_window_size(412, 915))  # a phone's screen
    await page.screenshot("approve-phone.png")
    await page.do(lambda d: d.set_window_size(1100, 1000))
    await page.click("#approve")
    await page.wait(lambda d: d.current_url.split("?")[0].endswith("/devices"))
    await page.do(lambda d: d.execute_script("document.body.dataset.marker = 'same page'"))
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    assert "logs in as alice@localhost/sensor" in out.decode()
    (device,) = server.registry.devices.all()
    assert device.added_via == "request"
    # The device logs in again and stays: the row turns online without a reload.
    runner = await asyncio.create_subprocess_exec(
        str(BIN / "device-agent"), "--state-dir", str(tmp_path / "sensor"), "run",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        row = f"tr[data-device='{device.id}']"
        await page.wait(
            lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.online").text == "online", 15
        )
        marker = await page.do(lambda d: d.execute_script("return document.body.dataset.marker"))
        assert marker == "same page"
    finally:
        runner.terminate()
        await runner.wait()


async def test_a_denied_request_stops_the_bot_with_a_clear_message(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    process, lines = await start_request(server, tmp_path / "sensor")
    path = shown(lines, "approve at").removeprefix(page.origin)
    await page.sign_in("alice", path=f"/login?next={path}")
    await page.wait(lambda d: d.find_elements(By.ID, "deny"))
    await page.click("#deny")
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert "not enrolled: the request was denied by alice@localhost" in err.decode()
    assert "Traceback" not in err.decode()
    assert server.registry.devices.all() == []
    assert not (tmp_path / "sensor" / "device.key").exists()  # the key made for it is gone


async def test_another_account_cannot_approve_the_request(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    server.add_user("mallory")
    process, lines = await start_request(server, tmp_path / "sensor")
    path = shown(lines, "approve at").removeprefix(page.origin)
    await page.sign_in("mallory", path=f"/login?next={path}")
    await page.wait(lambda d: "No such request" in d.page_source)
    status, _ = await asyncio.to_thread(
        https_post,
        server,
        path,
        {"decision": "approve", "csrf": await page.do(_csrf)},
        page.cookie("__Host-session"),
    )
    assert status == 409
    assert server.registry.devices.all() == []
    process.kill()
    await process.wait()


def _csrf(driver: Any) -> str:
    driver.get(driver.current_url.split("/approve")[0] + "/devices")
    return str(driver.find_element(By.NAME, "csrf").get_attribute("value"))


async def test_the_admin_filters_the_audit_log(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    client, _ = await enroll_device(server, tmp_path)
    await logout(client)
    server.set_device_state("alice", "bot", DeviceState.DISABLED, reason="lost")
    await page.sign_in("root")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    await page.open("/admin")
    await page.screenshot("admin.png")
    await page.open("/admin/audit")
    await page.fill("#a-event", "device.")
    await page.fill("#a-account", "alice")
    await page.click("#filter")
    await page.wait(lambda d: "event=device." in d.current_url)
    events = await page.texts("#audit td.event")
    assert events == ["device.disabled"]
    await page.screenshot("audit.png")
    # Not an admin: the page says so.
    await page.do(lambda d: d.delete_all_cookies())
    await page.sign_in("alice", path="/login?next=/admin/audit")
    await page.wait(lambda d: "This page is for admins." in d.page_source)


async def test_the_admin_list_follows_devices_live_and_a_kick_cuts_a_session(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    bot, bot_id = await enroll_device(server, tmp_path, "bot")
    other, _ = await enroll_device(server, tmp_path, "other")
    await page.sign_in("root")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    await page.open("/admin")
    row = f"#all-devices tr[data-device='{bot_id}']"
    await page.wait(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.online").text == "online")
    await page.do(lambda d: d.execute_script("document.body.dataset.marker = 'same page'"))
    # The device goes away: its row says so without a reload.
    await logout(bot)
    await page.wait(
        lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.online").text == "offline", 15
    )
    assert await page.do(lambda d: d.execute_script("return document.body.dataset.marker")) == (
        "same page"
    )
    # Kick another session from the sessions table: the device is cut off.
    gone = asyncio.Event()
    other.add_event_handler("disconnected", lambda _: gone.set())
    await page.do(
        lambda d: d.find_element(
            By.XPATH,
            "//table[@id='sessions']//form[input[@name='jid']"
            "[@value='alice@localhost/other']]/button",
        ).click()
    )
    await asyncio.wait_for(gone.wait(), 5)
    other.abort()
    await page.wait(lambda d: "alice@localhost/other" not in browser.text_of(d, "#sessions"))


async def test_the_owner_renames_disables_enables_and_cancels_a_code_from_the_page(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    client, device_id = await enroll_device(server, tmp_path)
    await logout(client)
    issued = issue_token(
        server.registry,
        TokenRules(),
        account=JID.parse("alice@localhost"),
        resource="later",
        name=None,
        ttl=None,
        created_by="alice@localhost",
    )
    await page.sign_in("alice")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    row = f"tr[data-device='{device_id}']"
    await page.fill(f"#name-{device_id}", "kitchen bot")
    await page.click(f"{row} form[action$='/rename'] button")
    await page.wait(lambda d: browser.text_of(d, f"{row} td.name") == "kitchen bot")
    await page.click(f"{row} form[action$='/disable'] button")
    await page.wait(lambda d: browser.text_of(d, f"{row} td.state") == "disabled")
    device = server.registry.devices.get(device_id)
    assert device is not None and device.state is DeviceState.DISABLED
    assert device.name == "kitchen bot"
    await page.click(f"{row} form[action$='/enable'] button")
    await page.wait(lambda d: browser.text_of(d, f"{row} td.state") == "active")
    # The code not used yet is listed with its countdown and can be cancelled.
    await page.click(f"form[action='/tokens/{issued.record.id}/cancel'] button")
    await page.wait(lambda d: not d.find_elements(By.ID, "tok-h"))
    (token,) = server.registry.tokens.all(JID.parse("alice@localhost"), None)
    assert token.state is TokenState.CANCELLED
    # The admin finds all of it in the audit log by the device's name, within a time window.
    await page.do(lambda d: d.delete_all_cookies())
    await page.sign_in("root", path="/login?next=/admin/audit")
    await page.wait(lambda d: d.find_elements(By.ID, "a-device"))
    await page.fill("#a-device", "kitchen bot")
    await page.fill("#a-since", "2000-01-01T00:00")
    await page.click("#filter")
    await page.wait(lambda d: "device=kitchen" in d.current_url)
    events = await page.texts("#audit td.event")
    assert events[:3] == ["device.enabled", "device.disabled", "device.renamed"], events
    await page.fill("#a-since", "2999-01-01T00:00")
    await page.click("#filter")
    await page.wait(lambda d: "No events match." in browser.text_of(d, "#audit"))


async def test_pages_carry_the_security_headers(web: tuple[RunningServer, Page]) -> None:
    server, _ = web

    def get(path: str, cookie: str | None = None) -> dict[str, str]:
        connection = https_connection(server)
        connection.request(
            "GET", path, headers={"Cookie": f"__Host-session={cookie}"} if cookie else {}
        )
        response = connection.getresponse()
        if not path.startswith("/events"):  # the event stream does not end: headers only
            response.read()
        connection.close()
        return dict(response.getheaders())

    session_id, _ = server.server.web_sessions.open(JID.parse("alice@localhost"), False)
    for path, cookie in (("/login", None), ("/events", session_id)):
        headers = await asyncio.to_thread(get, path, cookie)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert "unsafe-inline" not in headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Cache-Control"] == "no-store", path
        assert json.dumps(headers)  # plain strings


async def test_a_pending_request_is_listed_on_my_devices_and_can_be_cancelled(
    web: tuple[RunningServer, Page], tmp_path: Path
) -> None:
    server, page = web
    process, lines = await start_request(server, tmp_path / "sensor")
    await page.sign_in("alice")
    await page.wait(lambda d: d.current_url.endswith("/devices"))
    card = await page.text("li[data-request]")
    assert "sensor" in card and shown(lines, "user code") in card
    await page.click("li[data-request] button")
    await page.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, "li[data-request]"))
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert "not enrolled: the request was cancelled by alice@localhost" in err.decode()
    assert "pair_request.cancelled" in [e.event for e in server.registry.audit.events()]
