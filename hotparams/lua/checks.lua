-- checks.lua: part of the hotparams Lua library, appended to the files before
-- it at load time (hotparams/library.py PARTS); the cross-field checks a
-- model declares (hotparams/checks.py), enforced on every write.

local COMPARE = {
  ['<'] = function(a, b) return a < b end,
  ['<='] = function(a, b) return a <= b end,
  ['>'] = function(a, b) return a > b end,
  ['>='] = function(a, b) return a >= b end,
  ['=='] = function(a, b) return a == b end,
  ['!='] = function(a, b) return a ~= b end,
}

-- The messages of the checks that fail on `values` (field -> decoded value).
local function failed_checks(checks, values)
  local failed = {}
  for _, check in ipairs(checks) do
    local left, op, right = check[1], check[2], check[3]
    local a, b = values[left], values[right]
    local ta, tb = type(a), type(b)
    local comparable = ta == tb and (ta == 'number' or ta == 'string')
    local compare = COMPARE[op]
    if comparable and compare and not compare(a, b) then
      failed[#failed + 1] = left .. ' must be ' .. op .. ' ' .. right
    end
  end
  return failed
end

-- Check the base `values` (field -> JSON text) and, merged with them, each
-- A/B variant of the `variants` document; returns nil or an error reply.
local function check_cross(rules, values, variants)
  local checks = rules.checks
  if type(checks) ~= 'table' or #checks == 0 then return nil end
  local base = {}
  for _, check in ipairs(checks) do
    for _, name in ipairs({ check[1], check[3] }) do
      if base[name] == nil and values[name] ~= nil then
        local ok, v = pcall(cjson.decode, values[name])
        if ok then base[name] = v end
      end
    end
  end
  local problems = {}
  local failed = failed_checks(checks, base)
  if #failed > 0 then problems[#problems + 1] = { '*', table.concat(failed, '; ') } end
  if variants then
    local doc = cjson.decode(variants)
    for _, name in ipairs(sorted_keys(doc.variants or {})) do
      local merged = {}
      for field, v in pairs(base) do merged[field] = v end
      for field, v in pairs(doc.variants[name].overrides or {}) do merged[field] = v end
      local vfailed = failed_checks(checks, merged)
      if #vfailed > 0 then
        problems[#problems + 1] = { 'variant ' .. name .. ' *', table.concat(vfailed, '; ') }
      end
    end
  end
  if #problems > 0 then return invalid(problems) end
  return nil
end
