-- make install: the binary finds the Lua modules installed beside it, and
-- the man page documents every setting --help lists.
local testing = require "flyte.testing"
local flyte = require "flyte"

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, status = p:close()
  return ok and 0 or status, out
end

local tmpdir = testing.tmpdir

describe("make install", function()
  local prefix
  local build = testing.binary():match("^(.*)/flyte%-host$") or "build"

  lazy_setup(function()
    prefix = tmpdir()
    local status, out = run("cmake --install " .. build .. " --prefix " .. prefix)
    assert(status == 0, out)
  end)

  lazy_teardown(function() os.execute("rm -rf " .. prefix) end)

  it("installs the binary, the Lua modules, flyte.core and the man page", function()
    for _, path in ipairs { "bin/flyte-host", "share/flyte-host/lua/flyte/init.lua",
        "share/flyte-host/lua/flyte/testing.lua", "lib/flyte-host/flyte/core.so",
        "share/man/man1/flyte-host.1" } do
      assert.truthy(io.open(prefix .. "/" .. path), path)
    end
  end)

  it("makes the installed binary use the installed Lua modules", function()
    -- mark the installed copy, then see the mark from a pack
    local init = prefix .. "/share/flyte-host/lua/flyte/init.lua"
    local f = assert(io.open(init))
    local text = f:read("a")
    f:close()
    f = assert(io.open(init, "w"))
    f:write((text:gsub("\nreturn M%s*$", "\nM.INSTALLED = true\nreturn M\n")))
    f:close()
    local dir = tmpdir()
    f = assert(io.open(dir .. "/pack.lua", "w"))
    f:write([[
local flyte = require "flyte"
return flyte.pack { name = "Where", commands = { where = { output_events = { "Here" },
  handler = function() return flyte.event("Here", flyte.INSTALLED == true) end } } }
]])
    f:close()
    local status, out = run("env -u FLYTE_LUA_DIR " .. prefix .. "/bin/flyte-host invoke "
      .. dir .. "/pack.lua where")
    os.execute("rm -rf " .. dir)
    assert.equal(0, status, out)
    assert.same({ event = "Here", payload = true }, flyte.json.decode(out))
  end)

  it("lets `flyte-host test` run a pack's specs with the installed modules", function()
    local dir = tmpdir()
    os.execute("mkdir -p " .. dir .. "/spec")
    local f = assert(io.open(dir .. "/spec/mine_spec.lua", "w"))
    f:write([[
describe("mine", function()
  it("loads flyte.testing", function()
    assert.is_table(require("flyte.testing"))
  end)
end)
]])
    f:close()
    local status, out = run("cd " .. dir .. " && env -u FLYTE_LUA_DIR " .. prefix
      .. "/bin/flyte-host test spec/")
    os.execute("rm -rf " .. dir)
    assert.equal(0, status, out)
    assert.matches("1 success / 0 failures", out)
  end)
end)

describe("the man page", function()
  local page = assert(io.open("doc/flyte-host.1")):read("a")

  it("documents every setting that --help lists", function()
    local _, help = run(testing.binary() .. " --help")
    local n = 0
    for name in help:gmatch("(FLYTE_[%u_]+)") do
      n = n + 1
      assert.truthy(page:find("Ev " .. name, 1, true), name .. " is not in the man page")
    end
    assert.is_true(n >= 15)
  end)

  it("documents every command", function()
    for _, cmd in ipairs { "run", "check", "invoke", "dev", "standin", "test" } do
      assert.truthy(page:find("Cm " .. cmd, 1, true), cmd)
    end
  end)

  it("renders without warnings", function()
    local status, out = run("groff -mandoc -ww -z doc/flyte-host.1")
    assert.same({ 0, "" }, { status, out })
  end)
end)
