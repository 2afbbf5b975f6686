-- The benchmark's pack (bench/bench.lua): `echo` answers at once, `wait10`
-- after 10 ms, both with the input as an Echoed event.
local flyte = require "flyte"

local Echoed = flyte.event_def { name = "Echoed" }

return flyte.pack {
  name = "BenchEcho",
  commands = {
    echo = {
      output_events = { Echoed },
      handler = function(input) return flyte.event(Echoed, input) end,
    },
    wait10 = {
      output_events = { Echoed },
      handler = function(input)
        flyte.sleep(0.01)
        return flyte.event(Echoed, input)
      end,
    },
  },
}
