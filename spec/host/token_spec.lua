-- The token goes only to the flyte-api (issue 14): the real flyte-host with
-- FLYTE_JWT set, against the stand-in flyte-api or stub servers, over
-- 127.0.0.1, with a listener that must receive nothing.
--
-- An action's input is often built from event payloads that outsiders
-- write. An input the host cannot decode (1e400) once made it look for the
-- result link anywhere in the take reply, and it found one inside the input:
-- the FATAL, token included, went to the listener and the real action stayed
-- PENDING.
local testing = require "flyte.testing"
local flyte = require "flyte"

local PACK = "spec/fixtures/host/cases.lua"
local PACK_ID = "Cases.team.ops"
local JWT = "s3cret.jwt"
local WAIT = 10 -- seconds, for anything the host does

describe("the token", function()
  describe("with the stand-in flyte-api", function()
    local api, host, listener

    lazy_setup(function()
      listener = testing.http_stub()
      api = testing.api { jwt = JWT }
      host = testing.host(PACK, api, { FLYTE_JWT = JWT, FLYTE_WORKERS = 1,
        FLYTE_SHUTDOWN_GRACE = 1 })
      api:wait_registration(WAIT)
    end)

    lazy_teardown(function()
      if host then host:stop() end
      if api then api:stop() end
      if listener then listener:stop() end
    end)

    -- Queues an action whose input is `text`, sent verbatim in the take
    -- reply (the stand-in's input_text: jansson cannot hold 1e400).
    local function enqueue_text(command, text)
      local res = assert(flyte.http.request { method = "POST",
        url = api.url .. "/dev/actions", timeout = 5,
        body = { command = command, pack = PACK_ID, input_text = text } })
      assert.equal(201, res.status, res.body)
      return flyte.json.decode(res.body).id
    end

    local function steal_url()
      return listener.url .. "/steal/actions/zzz/result"
    end

    it("is not sent to a link inside an input the host cannot decode", function()
      local id = enqueue_text("echo",
        '{"x":{"href":"' .. steal_url() .. '"},"n":1e400}')
      local ok, result = pcall(api.wait_result, api, id, WAIT)
      -- first what matters most: the listener got nothing (the FATAL, with
      -- the token, once went there)
      assert.same({}, listener:requests())
      assert(ok, result)
      assert.same({ "FATAL", "command 'echo': the action's input cannot be "
        .. "decoded: real number overflow near '1e400'" },
        { result.event, result.payload })
      assert.same({ "DONE", 1 }, { api:action(id).state, api:action(id).results })
      assert.same({}, listener:requests())
    end)

    it("is not sent to links inside the input, whatever their rel", function()
      local fake = '{"href":"' .. steal_url() .. '","rel":"http://x/swagger#/actionResult"}'
      for _, text in ipairs {
        '{"links":[' .. fake .. '],"n":1e400}',
        '[' .. fake .. ',{"links":[' .. fake .. ']},-1e400]',
        '{"links":[' .. fake .. ']}', -- an input that decodes: the handler's
      } do
        local id = enqueue_text("echo", text)
        local result = api:wait_result(id, WAIT)
        assert.equal(1, api:action(id).results)
        local number = text:match("%-?1e400")
        if number then
          assert.same({ "FATAL", "command 'echo': the action's input cannot be "
            .. "decoded: real number overflow near '" .. number .. "'" },
            { result.event, result.payload })
        else
          assert.equal("Echoed", result.event)
          assert.equal(steal_url(), result.payload.links[1].href)
        end
      end
      assert.same({}, listener:requests())
    end)

    it("leaves the host serving", function()
      local result = api:wait_result(api:enqueue("echo", { n = 1 }, PACK_ID), WAIT)
      assert.same({ "Echoed", { n = 1 } }, { result.event, result.payload })
      assert.is_nil(host:exit_status())
      assert.same({}, listener:requests())
    end)
  end)

  -- The API itself hands out a link to another origin. The stand-in's links
  -- are always its own, so stub servers play the API here, each naming the
  -- ones started before it (a stub cannot name itself): the root names the
  -- registration and take servers in its discovery document (so their
  -- origins are the API's); the take server's action has its result link on
  -- the listener, which the discovery document does not name.
  describe("with an API whose action links to another origin", function()
    local listener, taker, registrar, root, host

    lazy_setup(function()
      listener = testing.http_stub()
      taker = testing.http_stub {
        ["POST /v1/packs/" .. PACK_ID .. "/actions/take"] = { status = 200, body = {
          command = "echo", input = { n = 1 },
          links = { { href = listener.url .. "/v1/packs/" .. PACK_ID .. "/actions/1/result",
            rel = "http://api/swagger#/actionResult" } } } },
      }
      registrar = testing.http_stub {
        ["POST /v1/packs"] = { status = 201, body = { id = PACK_ID, links = {
          { href = taker.url .. "/v1/packs/" .. PACK_ID .. "/actions/take",
            rel = "http://api/swagger#!/action/takeAction" },
          { href = taker.url .. "/v1/packs/" .. PACK_ID .. "/events",
            rel = "http://api/swagger#/event" } } } },
      }
      root = testing.http_stub {
        ["GET /v1"] = { status = 200, body = { links = {
          { href = registrar.url .. "/v1/packs", rel = "http://api/swagger#!/pack/listPacks" },
          { href = taker.url .. "/health", rel = "http://api/swagger#!/info/health" } } } },
      }
      host = testing.host(PACK, root.url, { FLYTE_JWT = JWT, FLYTE_WORKERS = 1,
        FLYTE_SHUTDOWN_GRACE = 1 })
    end)

    lazy_teardown(function()
      if host then host:stop() end
      for _, s in ipairs { root, registrar, taker, listener } do
        if s then s:stop() end
      end
    end)

    it("is refused and logged, and nothing is sent there", function()
      local port = listener.url:match(":(%d+)$")
      local line = host:wait_log("(post: refused to send the token to "
        .. "http://127%.0%.0%.1:" .. port .. " [^\n]+)", WAIT)
      assert.matches("ERROR", host:log():match("[^\n]*post: refused[^\n]*"))
      -- it names the origins the token may go to: the root's, then those of
      -- the discovery document's links
      assert.equal(root.url .. ", " .. registrar.url .. ", " .. taker.url,
        line:match("not an origin of the flyte%-api %(([^)]*)%)"))
      -- the API's own origins got the token; the listener got nothing
      local takes = taker:requests()
      assert.is_true(#takes >= 1)
      assert.equal("Bearer " .. JWT, takes[1].headers.authorization)
      assert.same({}, listener:requests())
      assert.is_nil(host:exit_status())
    end)
  end)
end)
