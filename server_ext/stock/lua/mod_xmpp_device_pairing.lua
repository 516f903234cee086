-- mod_xmpp_device_pairing: SASL EXTERNAL for devices registered with server-ext.
--
-- Part of xmpp-device-pairing (Apache-2.0), written for Prosody 0.12; no code of
-- mod_client_certs or mod_auth_ccert is used. `server-ext stock snippet` prints the lines
-- that load it (docs/server.md, "Prosody").
--
-- What it does, on each VirtualHost it is enabled for:
--  * Offers SASL EXTERNAL (XEP-0178) beside the host's own mechanisms, to clients that
--    presented a certificate, and decides each attempt by asking server-ext over HTTPS
--    whether that certificate is registered for an account of this host. The host's auth
--    provider is left as it is: owners keep logging in with their passwords.
--  * Locks the session to the resource the certificate names (XEP-0257 §2): a device
--    enrolled as alice@host/sensor may bind alice@host/sensor and nothing else.
--  * Serves server-ext (and nobody else: a shared secret) over HTTP: POST .../close ends
--    the sessions of revoked devices at once; GET .../sessions lists who is online with
--    which certificate.
--
-- Settings (global or per VirtualHost):
--   xmpp_device_pairing_url    = "https://127.0.0.1:5443"   -- server-ext's HTTPS face
--   xmpp_device_pairing_cafile = "/path/to/server-ext.crt"  -- the certificate it must show
--   xmpp_device_pairing_secret = "…"                         -- the same secret as server-ext's
--   xmpp_device_pairing_timeout = 5                          -- seconds to wait for an answer
-- and the client certificate must reach modules: c2s_ssl = { verify = { "peer", "client_once" } }

local array = require "util.array";
local async = require "util.async";
local base64 = require "util.encodings".base64;
local hashes = require "util.hashes";
local http = require "net.http";
local json = require "util.json";
local new_sasl = require "util.sasl".new;
local resourceprep = require "util.encodings".stringprep.resourceprep;
local x509 = require "util.x509";
local st = require "util.stanza";

local CHECK_PATH = "/api/v1/stock/prosody/certificate";
-- RFC 6120 §4.9.4: an application condition the device agent reads as "stop, you were
-- revoked" (pairing/protocol/conditions.py).
local DEVICE_NS = "urn:xmpp-device-pairing:device:0";

local base_url = module:get_option_string("xmpp_device_pairing_url");
local cafile = module:get_option_string("xmpp_device_pairing_cafile");
local secret = module:get_option_string("xmpp_device_pairing_secret");
local timeout = module:get_option_number("xmpp_device_pairing_timeout", 5);

if not (base_url and cafile and secret) then
	module:log("error", "xmpp_device_pairing_url, xmpp_device_pairing_cafile and "
		.. "xmpp_device_pairing_secret must all be set; EXTERNAL is not offered");
	return;
end
if #secret < 16 then
	module:log("error", "xmpp_device_pairing_secret is too short (16 characters at least); "
		.. "EXTERNAL is not offered");
	return;
end

local check_url = base_url:gsub("/+$", "") .. CHECK_PATH;
-- The HTTPS client pins server-ext's certificate: the handshake fails unless the server shows
-- a certificate that chains to cafile (server-ext's own self-signed identity by default).
-- net.http's host-name check is skipped (insecure) because the pin is the stronger check
-- and server-ext may listen on an address its certificate does not name (127.0.0.1).
local client = http.new({
	sslctx = {
		mode = "client";
		protocol = "any";
		options = { "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1", "no_compression" };
		verify = { "peer" };
		cafile = cafile;
	};
	suppress_errors = true;
});

local host_session = prosody.hosts[module.host];
local secret_digest = hashes.sha256(secret, true);
local originals = {};

local function peer_certificate(session)
	if not (session.secure and session.conn) then return nil; end
	local sock = session.conn:socket();
	if not (sock and sock.getpeercertificate) then return nil; end
	return sock:getpeercertificate();
end

-- The account part of a JID of this host, or nil.
local function local_user(jid)
	if type(jid) ~= "string" then return nil; end
	local user, domain = jid:match("^([^@/]+)@([^/]+)$");
	if domain ~= module.host then return nil; end
	return user;
end

local function ask_server_ext(session, cert, authzid)
	local der = x509.pem2der(cert:pem());
	if not der then return nil, "the certificate could not be read"; end
	local body = json.encode({ der = base64.encode(der), authzid = authzid or "" });
	local response, err = async.wait_for(client:request(check_url, {
		method = "POST";
		body = body;
		insecure = true;
		headers = {
			["Content-Type"] = "application/json";
			["Authorization"] = "Bearer " .. secret;
			["Host"] = check_url:match("^https?://([^/]+)");
		};
	}));
	if not response then
		return nil, "server-ext did not answer: " .. tostring(err);
	end
	local answer = json.decode(response.body or "");
	if response.code ~= 200 then
		local why = type(answer) == "table" and answer.error or ("HTTP " .. tostring(response.code));
		return nil, tostring(why);
	end
	if type(answer) ~= "table" then
		return nil, "server-ext sent a malformed answer";
	end
	return answer, cert:digest("sha256");
end

-- util.sasl's EXTERNAL calls profile.external(authzid) and reads (username, state): state
-- true is success as username, nil is <not-authorized/>.
local function external_for(session)
	return function (authzid)
		local cert = peer_certificate(session);
		if not cert then
			return nil;
		end
		-- mod_c2s runs each stanza in the session's util.async runner: this wait suspends
		-- this session only (docs/stock-servers.md, "A module of ours").
		local answer, detail = ask_server_ext(session, cert, authzid);
		if not answer then
			session.log("info", "xmpp_device_pairing: EXTERNAL refused: %s", detail);
			return nil;
		end
		local user = local_user(answer.account);
		if not user then
			session.log("warn", "xmpp_device_pairing: server-ext named an account of another host");
			return nil;
		end
		local resource = answer.resource;
		if resource == json.null or resource == "" then resource = nil; end
		session.xmpp_device_pairing = { resource = resource; fingerprint = detail };
		session.log("info", "xmpp_device_pairing: EXTERNAL accepted for %s (certificate %s)",
			tostring(answer.jid), detail);
		return user, true;
	end
end

-- The provider's SASL handler with EXTERNAL added, on a copy of its profile: the provider
-- may share its profile table, and the EXTERNAL backend belongs to one session.
local function wrap(provider)
	if not provider or originals[provider] then return; end
	local original = provider.get_sasl_handler;
	originals[provider] = original;
	provider.get_sasl_handler = function (session, ...)
		local handler = original(session, ...);
		if not (session and session.type == "c2s_unauthed") then return handler; end
		-- Offered only to a client that presented a certificate: clients such as slixmpp try
		-- EXTERNAL first whenever it is offered, even with a password at hand.
		if not peer_certificate(session) then return handler; end
		local profile = {};
		for key, value in pairs(handler.profile) do profile[key] = value; end
		profile.mechanisms = nil; -- util.sasl.new recomputes them from the backends present
		profile.external = external_for(session);
		return new_sasl(handler.realm, profile);
	end;
	module:log("info", "EXTERNAL offered through server-ext (%s) beside auth provider %s",
		check_url, tostring(provider.name));
end

wrap(host_session.users);
-- usermanager installs the provider on this event; run after it and wrap the new one.
module:hook("item-added/auth-provider", function () wrap(host_session.users); end, -10);

function module.unload()
	for provider, original in pairs(originals) do
		provider.get_sasl_handler = original;
	end
end

-- XEP-0257 §2, XEP-0178 §3: a full JID in the certificate pins the resource.
module:hook("pre-resource-bind", function (event)
	local lock = event.session.xmpp_device_pairing;
	if not (lock and lock.resource) then return; end
	local wanted = event.resource;
	if wanted and wanted ~= "" and resourceprep(wanted) ~= lock.resource then
		event.error = {
			type = "cancel";
			condition = "not-allowed";
			text = "this certificate may bind only the resource " .. lock.resource;
		};
		return false;
	end
	event.resource = lock.resource;
end, 10);

-- HTTP, for server-ext only.

local function authorised(request)
	local header = request.headers.authorization or "";
	local given = header:match("^Bearer (.+)$");
	return given ~= nil and hashes.equals(hashes.sha256(given, true), secret_digest);
end

local function reply(response, code, payload)
	response.status_code = code;
	response.headers.content_type = "application/json";
	return json.encode(payload);
end

local function sessions_of(jid)
	local user, domain, resource = jid:match("^([^@/]+)@([^/]+)/?(.*)$");
	if domain ~= module.host then return {}; end
	local account = host_session.sessions[user];
	if not account then return {}; end
	if resource ~= "" then
		local one = account.sessions[resource];
		return one and { one } or {};
	end
	local all = {};
	for _, session in pairs(account.sessions) do all[#all + 1] = session; end
	return all;
end

local function close(event)
	local request, response = event.request, event.response;
	if not authorised(request) then return reply(response, 401, { error = "unauthorised" }); end
	local ok, body = pcall(json.decode, request.body or "");
	if not ok or type(body) ~= "table" or type(body.jids) ~= "table" then
		return reply(response, 400, { error = "expected {\"jids\": [...], \"reason\": \"...\"}" });
	end
	local reason = type(body.reason) == "string" and body.reason or "closed by server-ext";
	local closed = 0;
	for _, jid in ipairs(body.jids) do
		if type(jid) == "string" then
			for _, session in ipairs(sessions_of(jid)) do
				local condition = { condition = "policy-violation"; text = reason };
				if body.revoked then
					-- RFC 6120 §4.9.3.16: <reset/> for a credential revoked during the stream,
					-- with the project's <revoked/> so the device stops instead of retrying.
					condition = {
						condition = "reset";
						text = reason;
						extra = st.stanza("revoked", { xmlns = DEVICE_NS });
					};
				end
				session:close(condition);
				closed = closed + 1;
			end
		end
	end
	module:log("info", "server-ext closed %d session(s)", closed);
	return reply(response, 200, { closed = closed });
end

local function list_sessions(event)
	local request, response = event.request, event.response;
	if not authorised(request) then return reply(response, 401, { error = "unauthorised" }); end
	local rows = array(); -- encoded as a JSON array even when empty
	for user, account in pairs(host_session.sessions or {}) do
		for resource, session in pairs(account.sessions or {}) do
			local lock = session.xmpp_device_pairing;
			rows[#rows + 1] = {
				jid = user .. "@" .. module.host .. "/" .. resource;
				fingerprint = lock and lock.fingerprint or json.null;
			};
		end
	end
	return reply(response, 200, { sessions = rows });
end

module:depends("http");
module:provides("http", {
	name = "xmpp_device_pairing";
	route = {
		["POST /close"] = close;
		["GET /sessions"] = list_sessions;
	};
});
