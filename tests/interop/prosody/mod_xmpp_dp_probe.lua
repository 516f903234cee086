-- mod_xmpp_dp_probe: proves what a module of this project can do inside Prosody 0.12.
--
-- Loaded from the test's own plugin_paths, it offers SASL EXTERNAL (to clients that
-- presented a certificate) beside the host's password mechanisms (the auth provider stays internal_hashed, so owners keep logging in
-- with passwords) and decides each EXTERNAL attempt by POSTing the client's certificate to
-- an HTTP endpoint, waiting for the answer with util.async inside the SASL step.
-- Written for tests/interop/test_stock_servers.py; it proves the hooks, nothing more.

local async = require "util.async";
local http = require "net.http";
local new_sasl = require "util.sasl".new;

local verify_url = module:get_option_string("xmpp_dp_probe_url");
local host_session = prosody.hosts[module.host];
local originals = {};

local function peer_certificate(session)
	if not (session.secure and session.conn) then return nil; end
	local sock = session.conn:socket();
	if not (sock and sock.getpeercertificate) then return nil; end
	return sock:getpeercertificate();
end

-- util.sasl's EXTERNAL calls profile.external(authzid) and reads (username, state):
-- state true is success, nil is <not-authorized/>, false is <account-disabled/>.
local function external_for(session)
	return function (authzid)
		local cert = peer_certificate(session);
		if not cert then
			session.log("info", "xmpp_dp_probe: EXTERNAL without a client certificate");
			return nil;
		end
		-- mod_c2s runs each stanza in the session's util.async runner, so this wait suspends
		-- only this session while the request is in flight.
		local in_runner = async.ready();
		local response, err = async.wait_for(http.request(verify_url, {
			method = "POST";
			body = cert:pem();
			headers = {
				["Content-Type"] = "application/x-pem-file";
				["X-Authzid"] = authzid or "";
				["X-In-Async-Runner"] = in_runner and "yes" or "no";
			};
		}));
		if not response then
			session.log("warn", "xmpp_dp_probe: no answer from the registry: %s", tostring(err));
			return nil;
		end
		if response.code ~= 200 then
			return nil;
		end
		return response.body, true;
	end
end

-- The provider's SASL handler with EXTERNAL added, on a copy of its profile: the provider
-- may reuse its profile table, and the EXTERNAL backend belongs to one session.
local function wrap(provider)
	if not provider or originals[provider] then return; end
	local original = provider.get_sasl_handler;
	originals[provider] = original;
	provider.get_sasl_handler = function (session, ...)
		local handler = original(session, ...);
		if not (session and session.type == "c2s_unauthed") then return handler; end
		-- Offer EXTERNAL only to a client that presented a certificate: clients such as
		-- slixmpp try EXTERNAL first whenever it is offered, even with a password at hand.
		if not peer_certificate(session) then
			session.log("debug", "xmpp_dp_probe: no client certificate, EXTERNAL not offered");
			return handler;
		end
		local profile = {};
		for key, value in pairs(handler.profile) do profile[key] = value; end
		profile.mechanisms = nil; -- recomputed by util.sasl.new from the backends present
		profile.external = external_for(session);
		return new_sasl(handler.realm, profile);
	end;
	module:log("info", "EXTERNAL added to the SASL handler of auth provider %s",
		tostring(provider.name));
end

wrap(host_session.users);
-- usermanager installs the provider on this event; run after it and wrap the new one.
module:hook("item-added/auth-provider", function () wrap(host_session.users); end, -10);

function module.unload()
	for provider, original in pairs(originals) do
		provider.get_sasl_handler = original;
	end
end
