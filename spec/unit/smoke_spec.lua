describe("smoke", function()
  it("loads flyte", function()
    local flyte = require "flyte"
    assert.equal("5", flyte.json.encode(5))
  end)
end)
