-- Hot reload: the pack's files are edited while flyte-host runs.
local testing = require "flyte.testing"
local flyte = require "flyte"

local function write(path, text, by_rename)
  local target = by_rename and path .. ".tmp" or path
  local f = assert(io.open(target, "w"))
  f:write(text)
  f:close()
  if by_rename then assert(os.rename(target, path)) end
end

local function pack_source(opts)
  return ([[
local flyte = require "flyte"
local helper = require "helper"
return flyte.pack {
  name = "Reloadable",
  commands = {
    version = { output_events = { "Version" }, handler = function()
      return flyte.event("Version", { handler = %q, helper = helper.VERSION })
    end },
    wait = { output_events = { "Version" }, handler = function(input)
      while not io.open(input.file) do
        if not flyte.sleep(0.02) then break end
      end
      return flyte.event("Version", { handler = %q, helper = helper.VERSION })
    end },
    %s
  },
  observe = function()
    flyte.send_event(flyte.event("Started", %q))
    while flyte.sleep(60) do end
  end,
}
]]):format(opts.version, opts.version, opts.extra or "", opts.version)
end

local tmpdir = testing.tmpdir

describe("hot reload", function()
  local api, host, dir, pack

  local function version()
    local id = api:enqueue("version")
    return api:wait_result(id).payload
  end

  local function registrations()
    return api:state().packs[1].registrations
  end

  local function reloads()
    local n = 0
    for _ in host:log():gmatch("reloaded [^\n]+") do n = n + 1 end
    return n
  end

  local function wait_reloads(n)
    testing.wait(function() return reloads() >= n end, 5, n .. " reload(s)")
  end

  before_each(function()
    dir = tmpdir()
    pack = dir .. "/pack.lua"
    write(dir .. "/helper.lua", 'return { VERSION = "h1" }')
    write(pack, pack_source { version = "v1" })
    api = testing.api()
    host = testing.host(pack, api, { FLYTE_WORKERS = 2 })
    api:wait_registration()
  end)

  after_each(function()
    if os.getenv("SHOW_LOG") then print(host:log()) end
    host:stop()
    api:stop()
    os.execute("rm -rf " .. dir)
  end)

  it("stops within its grace while a reload runs code that never ends",
    function()
      host:stop()
      local before = registrations()
      host = testing.host(pack, api, { FLYTE_SHUTDOWN_GRACE = 1 })
      -- this host's own registration: it watches the pack's files by then
      testing.wait(function() return registrations() > before end, 10,
        "the new host to register")
      local marker = dir .. "/loading"
      write(pack, ("io.open(%q, 'w'):close()\nwhile true do end\n")
        :format(marker), true)
      testing.wait(function() return io.open(marker) end, 10,
        "the reload to run the new code")
      host:signal("TERM")
      testing.wait(function() return host:exit_status() ~= nil end, 15,
        "the host to exit")
      assert.equal(0, host:exit_status())
      assert.matches("the reload under way did not end after the host "
        .. "stopped", host:log())
    end)

  it("runs the edited handler for the next action", function()
    assert.same({ handler = "v1", helper = "h1" }, version())
    write(pack, pack_source { version = "v2" }, true)
    wait_reloads(1)
    assert.same({ handler = "v2", helper = "h1" }, version())
  end)

  it("counts an editor that truncates and writes in place", function()
    write(pack, pack_source { version = "v2" }, false)
    wait_reloads(1)
    assert.same("v2", version().handler)
  end)

  it("does not register again when only handler bodies changed", function()
    write(pack, pack_source { version = "v2" }, true)
    wait_reloads(1)
    assert.same("v2", version().handler)
    assert.equal(1, registrations())
  end)

  it("registers again, with the new command, when a command is added", function()
    write(pack, pack_source { version = "v2", extra = [[
    added = { output_events = { "Added" }, handler = function() return flyte.event("Added") end },
    ]] }, true)
    testing.wait(function() return registrations() == 2 end, 5, "a second registration")
    local names = {}
    for _, c in ipairs(api:state().packs[1].registration.commands) do
      names[#names + 1] = c.name
    end
    assert.same({ "added", "version", "wait" }, names)
    assert.equal("Added", api:wait_result(api:enqueue("added")).event)
  end)

  it("reloads when a module beside the pack changes", function()
    write(dir .. "/helper.lua", 'return { VERSION = "h2" }', true)
    wait_reloads(1)
    assert.same({ handler = "v1", helper = "h2" }, version())
  end)

  it("keeps the old code serving after a syntax error, and shows it in health", function()
    write(pack, "return {{{ oops", true)
    host:wait_log("reload of [^\n]+ failed, the code loaded before goes on serving: "
      .. "[^\n]*pack%.lua:1:")
    assert.same({ handler = "v1", helper = "h1" }, version())
    local status, body = testing.get(host.health_url)
    assert.equal(200, status)
    local health = flyte.json.decode(body)
    assert.equal(pack, health.PackReload.status.file)
    assert.matches("pack%.lua:1:", health.PackReload.status.error)
    assert.matches("^%d%d%d%d%-", health.PackReload.status.at)

    write(pack, pack_source { version = "v3" }, true)
    wait_reloads(1)
    assert.same("v3", version().handler)
    assert.is_nil(flyte.json.decode(select(2, testing.get(host.health_url))).PackReload)
  end)

  it("lets an action started before a reload finish with the old code", function()
    local release = dir .. "/release"
    local id = api:enqueue("wait", { file = release })
    testing.wait(function() return api:action(id).state == "PENDING" end, 5, "the action")
    write(pack, pack_source { version = "v2" }, true)
    wait_reloads(1)
    write(release, "go")
    assert.same({ handler = "v1", helper = "h1" }, api:wait_result(id).payload)
    assert.same("v2", version().handler)
  end)

  it("restarts observe with the new code", function()
    api:wait_events(1)
    write(pack, pack_source { version = "v2" }, true)
    local events = api:wait_events(2)
    assert.same({ "v1", "v2" }, { events[1].body.payload, events[2].body.payload })
  end)

  it("completes every action of a burst across a reload exactly once", function()
    local ids = {}
    for i = 1, 100 do
      ids[i] = api:enqueue("version")
      if i == 30 then write(pack, pack_source { version = "v2" }, true) end
    end
    local seen = {}
    for i = 1, 100 do
      local result = api:wait_result(ids[i], 20)
      seen[result.payload.handler] = (seen[result.payload.handler] or 0) + 1
    end
    assert.equal(100, (seen.v1 or 0) + (seen.v2 or 0))
    for _, a in ipairs(api:state().actions) do assert.equal("DONE", a.state) end
    assert.equal(100, #api:state().actions)
  end)
end)

describe("hot reload turned off", function()
  it("does not watch the files, but still reloads on SIGHUP", function()
    local dir = tmpdir()
    local pack = dir .. "/pack.lua"
    write(dir .. "/helper.lua", 'return { VERSION = "h1" }')
    write(pack, pack_source { version = "v1" })
    local api = testing.api()
    local host = testing.host(pack, api, { FLYTE_RELOAD = "off" })
    api:wait_registration()
    write(pack, pack_source { version = "v2" }, true)
    local id = api:enqueue("version")
    assert.equal("v1", api:wait_result(id).payload.handler)
    host:signal("HUP")
    host:wait_log("reloaded [^\n]+ %(SIGHUP%)")
    assert.equal("v2", api:wait_result(api:enqueue("version")).payload.handler)
    host:stop()
    api:stop()
    os.execute("rm -rf " .. dir)
  end)
end)
