--- The flyte-shell pack, in Lua: command `shell` runs its input, a script,
-- with bash and answers Output { stdout, stderr, exit_code }.
--
-- A flow sends { "command": "shell", "input": "uname -a" }.

local flyte = require "flyte"

local Output = flyte.event_def { name = "Output" }
local Error = flyte.event_def { name = "Error" }

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("a")
  f:close()
  return text
end

local function run(script)
  if type(script) ~= "string" then
    return Error { error = "input must be a script (a JSON string), got "
      .. type(script) }
  end
  local script_path, out, err = os.tmpname(), os.tmpname(), os.tmpname()
  local f = assert(io.open(script_path, "wb"))
  f:write(script)
  f:close()
  local _, how, code = os.execute(string.format("bash %s >%s 2>%s </dev/null",
    quote(script_path), quote(out), quote(err)))
  local result = Output {
    stdout = slurp(out),
    stderr = slurp(err),
    exit_code = how == "exit" and code or 128 + code,
  }
  os.remove(script_path)
  os.remove(out)
  os.remove(err)
  return result
end

return flyte.pack {
  name = "Shell",
  help_url = "https://github.com/ExpediaGroup/flyte-shell",
  commands = {
    shell = {
      output_events = { Output, Error },
      handler = run,
    },
  },
}
