-- README.md's walk-through is run, so that it stays true. In the sections
-- "Trying a pack" and "Testing a pack", every ```lua snippet names its file
-- on its first line ("-- hello.lua", "-- spec/hello_spec.lua"); the
-- snippets are written to a temporary directory as those files, where the
-- packs must pass `flyte-host check` and luacheck, and the specs must pass
-- under `flyte-host test`. Each "$ flyte-host ..." line of a ```console
-- block must print the lines that follow it.
local testing = require "flyte.testing"

local SECTIONS = { "Trying a pack", "Testing a pack" }

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns its exit status and its output.
local function sh(command)
  local out = os.tmpname()
  local _, _, status = os.execute(command .. " >" .. out .. " 2>&1 </dev/null")
  local text = read(out)
  os.remove(out)
  return status, text
end

-- The text of the README's "## title" section, up to the next "## ".
local function section(readme, title)
  local start = readme:find("\n## " .. title .. "\n", 1, true)
  if not start then return nil end
  local stop = readme:find("\n## ", start + 4, true)
  return readme:sub(start + 1, stop or #readme)
end

-- The bodies of the blocks fenced as ```lang in text.
local function blocks(text, lang)
  local found = {}
  for body in text:gmatch("\n```" .. lang .. "\n(.-)\n```") do
    found[#found + 1] = body
  end
  return found
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local p = assert(io.popen("pwd"))
  local dir = p:read("l")
  p:close()
  return dir .. "/" .. path
end

describe("README.md's walk-through", function()
  local readme = read("README.md")
  local snippets, consoles = {}, {}  -- { title =, body = }
  for _, title in ipairs(SECTIONS) do
    local text = section(readme, title) or ""
    for _, body in ipairs(blocks(text, "lua")) do
      snippets[#snippets + 1] = { title = title, body = body }
    end
    for _, body in ipairs(blocks(text, "console")) do
      consoles[#consoles + 1] = body
    end
  end
  local bin = absolute(testing.binary())
  local dir

  -- The snippet's file name, from its first line.
  local function file_of(snippet)
    return snippet.body:match("^%-%- ([%w_%-/]+%.lua)\n")
  end

  setup(function()
    local p = assert(io.popen("mktemp -d /tmp/flyte-readme.XXXXXX"))
    dir = p:read("l")
    p:close()
    assert(os.execute("mkdir -p " .. quote(dir .. "/bin") .. " && ln -s "
      .. quote(bin) .. " " .. quote(dir .. "/bin/flyte-host")))
    for _, snippet in ipairs(snippets) do
      local name = file_of(snippet)
      if name then
        local path = dir .. "/" .. name
        assert(os.execute("mkdir -p " .. quote(path:match("^(.*)/"))))
        local f = assert(io.open(path, "wb"))
        f:write(snippet.body, "\n")
        f:close()
      end
    end
  end)

  teardown(function()
    if dir then os.execute("rm -rf " .. quote(dir)) end
  end)

  -- The snippets that are packs (not specs), by file name.
  local function packs()
    local names = {}
    for _, snippet in ipairs(snippets) do
      local name = file_of(snippet)
      if name and not name:match("_spec%.lua$") then names[#names + 1] = name end
    end
    return names
  end

  for _, title in ipairs(SECTIONS) do
    it("has Lua snippets in the section '" .. title .. "'", function()
      local n = 0
      for _, snippet in ipairs(snippets) do
        if snippet.title == title then n = n + 1 end
      end
      assert.is_true(n > 0, "no ```lua block in the section '" .. title .. "'")
    end)
  end

  it("names the file of every Lua snippet on its first line", function()
    for _, snippet in ipairs(snippets) do
      assert.is_truthy(file_of(snippet), "a snippet in '" .. snippet.title
        .. "' does not start with '-- FILE.lua':\n" .. snippet.body)
    end
  end)

  it("gives every Lua snippet a file of its own", function()
    local seen = {}
    for _, snippet in ipairs(snippets) do
      local name = file_of(snippet)
      assert.is_nil(seen[name], "two snippets are " .. tostring(name))
      seen[name] = true
    end
  end)

  it("has snippet packs that flyte-host check accepts", function()
    assert.is_true(#packs() > 0)
    for _, name in ipairs(packs()) do
      local status, out = sh("cd " .. quote(dir) .. " && " .. quote(bin)
        .. " check " .. quote(name))
      assert.equal(0, status, name .. ": " .. out)
    end
  end)

  it("has snippets that luacheck passes", function()
    local status, out = sh("cd " .. quote(dir) .. " && luacheck --no-config "
      .. "--std lua54+busted --max-line-length 100 .")
    assert.equal(0, status, out)
  end)

  it("has snippet specs that pass under flyte-host test, every one run", function()
    local expected = 0
    for _, snippet in ipairs(snippets) do
      if file_of(snippet):match("_spec%.lua$") then
        for _ in snippet.body:gmatch("%f[%w_]it%(") do expected = expected + 1 end
      end
    end
    assert.is_true(expected > 0)
    local status, out = sh("cd " .. quote(dir) .. " && FLYTE_HOST_BIN="
      .. quote(bin) .. " " .. quote(bin) .. " test spec/")
    assert.equal(0, status, out)
    assert.matches("\n" .. expected .. " successes / 0 failures / 0 errors", out)
  end)

  it("counts the snippet specs' tests right where it says how many pass", function()
    local expected = 0
    for _, snippet in ipairs(snippets) do
      for _ in snippet.body:gmatch("%f[%w_]it%(") do expected = expected + 1 end
    end
    for _, title in ipairs(SECTIONS) do
      for claimed in (section(readme, title) or ""):gmatch("`(%d+) successes / 0 failures`") do
        assert.equal(expected, tonumber(claimed))
      end
    end
  end)

  it("prints what its console blocks show after each flyte-host command", function()
    local ran = 0
    for _, body in ipairs(consoles) do
      for command, shown in (body .. "\n$"):gmatch("%$ (flyte%-host [^\n]*)\n(.-)%f[$]") do
        local status, out = sh("cd " .. quote(dir) .. " && PATH=" .. quote(dir .. "/bin")
          .. ":\"$PATH\" " .. command)
        assert.equal(0, status, command .. ": " .. out)
        assert.equal(shown, out, command)
        ran = ran + 1
      end
    end
    assert.is_true(ran > 0, "no '$ flyte-host' line in a ```console block")
  end)
end)
