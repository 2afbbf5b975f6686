-- The stand-in flyte-api as an author meets it: every link /v1 gives
-- answers, an action for a command the pack does not have is refused
-- naming those it has, and /dev/ shows RFC 3339 times.
local testing = require "flyte.testing"
local flyte = require "flyte"

local function get(url)
  local res = assert(flyte.http.request { url = url })
  return res.status, res.body
end

describe("the stand-in flyte-api", function()
  local api, host

  lazy_setup(function()
    api = testing.api()
    host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_OUTBOX = "off" })
    api:wait_registration()
  end)

  lazy_teardown(function()
    host:stop()
    api:stop()
  end)

  it("answers every link /v1 gives", function()
    local status, body = get(api.url .. "/v1")
    assert.equal(200, status)
    local links = flyte.json.decode(body).links
    assert.is_true(#links >= 9)
    for _, link in ipairs(links) do
      local href = link.href:gsub("#.*$", "")
      assert.equal(200, (get(href)), link.rel .. " " .. href)
    end
  end)

  it("lists the packs registered at listPacks", function()
    local status, body = get(api.url .. "/v1/packs")
    assert.equal(200, status)
    local packs = flyte.json.decode(body).packs
    assert.equal(1, #packs)
    assert.equal("Cases", packs[1].name)
    assert.equal(api.url .. "/v1/packs/" .. packs[1].id,
      packs[1].links[1].href)
  end)

  it("refuses an action for a command the pack does not have", function()
    local res = assert(flyte.http.request { method = "POST",
      url = api.url .. "/dev/actions", body = { command = "nope" } })
    assert.equal(400, res.status)
    assert.matches("^command 'nope' is unknown to pack Cases%.team%.ops %(its "
      .. "commands: ", flyte.json.decode(res.body).error)
  end)

  it("shows when an action was queued, taken and done, in RFC 3339", function()
    local id = api:enqueue("echo", "hi")
    api:wait_result(id)
    local at = api:action(id).at
    for _, name in ipairs { "queued", "taken", "done" } do
      assert.is_number(testing.parse_time(at[name]), name .. ": "
        .. tostring(at[name]))
    end
    assert.is_true(testing.parse_time(at.done) >= testing.parse_time(at.queued))
    assert.is_true(math.abs(testing.parse_time(at.queued) - os.time()) < 60)
  end)
end)
