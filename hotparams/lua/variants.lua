-- variants.lua: part of the hotparams Lua library, appended to the files before
-- it at load time (hotparams/library.py PARTS); the checks of an A/B
-- variants document (see hotparams/variants.py).

-- ------------------------------------------------------------------ variants

local BUCKETS = 10000
local MAX_VARIANTS_BYTES = 1048576

local function is_array(t)
  return type(t) == 'table' and (next(t) == nil or t[1] ~= nil)
end

-- Check the variants document (see hotparams/variants.py); returns nil or
-- an error reply.  Overrides obey the field rules; bucket ranges of all
-- variants are disjoint; a user is on one allow-list at most.
local function check_variants(rules, text, max_bytes)
  local function bad(msg) return redis.error_reply('HP_INVALID @variants: ' .. msg) end
  if #text > MAX_VARIANTS_BYTES then return bad('larger than 1 MiB') end
  if not is_strict_json(text) then return bad('not valid JSON') end
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= 'table' or type(doc.variants) ~= 'table'
      or type(doc.salt) ~= 'string' or #doc.salt == 0 then
    return bad('must be {"salt": "...", "variants": {...}}')
  end
  local problems, spans, owner = {}, {}, {}
  for _, name in ipairs(sorted_keys(doc.variants)) do
    local spec = doc.variants[name]
    if type(name) ~= 'string' or #name > 64 or not name:match('^[%w][%w_%.%-]*$') then
      return bad('variant name ' .. cjson.encode(name) .. ' is not valid')
    end
    if type(spec) ~= 'table' then return bad('variant ' .. name .. ' must be an object') end
    local overrides = spec.overrides or {}
    if type(overrides) ~= 'table' or (next(overrides) ~= nil and overrides[1] ~= nil) then
      return bad('variant ' .. name .. ': overrides must be an object')
    end
    for _, field in ipairs(sorted_keys(overrides)) do
      local rule = rules.fields[field]
      local label = 'variant ' .. name .. ' ' .. field
      if not rule then
        problems[#problems + 1] = { label, 'unknown field' }
      else
        local reason = check_value(rule, cjson.encode(overrides[field]), max_bytes)
        if reason then problems[#problems + 1] = { label, reason } end
      end
    end
    local buckets = spec.buckets or {}
    if not is_array(buckets) then return bad('variant ' .. name .. ': buckets must be a list') end
    for _, r in ipairs(buckets) do
      if not is_array(r) or #r ~= 2 or type(r[1]) ~= 'number' or type(r[2]) ~= 'number'
          or r[1] ~= math.floor(r[1]) or r[2] ~= math.floor(r[2])
          or r[1] < 0 or r[2] > BUCKETS or r[1] >= r[2] then
        return bad('variant ' .. name .. ': buckets must be [start, end) ranges within 0-'
          .. BUCKETS)
      end
      spans[#spans + 1] = { r[1], r[2], name }
    end
    local users = spec.users or {}
    if not is_array(users) then return bad('variant ' .. name .. ': users must be a list') end
    for _, user in ipairs(users) do
      if type(user) ~= 'string' then
        return bad('variant ' .. name .. ': user ids must be strings')
      end
      if owner[user] and owner[user] ~= name then
        return bad('user ' .. cjson.encode(user) .. ' is on the allow-lists of '
          .. owner[user] .. ' and ' .. name)
      end
      owner[user] = name
    end
  end
  table.sort(spans, function(a, b) return a[1] < b[1] end)
  for i = 2, #spans do
    if spans[i][1] < spans[i - 1][2] then
      return bad('the buckets of ' .. spans[i - 1][3] .. ' and ' .. spans[i][3] .. ' overlap')
    end
  end
  if #problems > 0 then return invalid(problems) end
  return nil
end

-- The variants document with secret override values masked (for the audit);
-- also tells whether it held any secret.
local function masked_variants(rules, text)
  local doc = cjson.decode(text)
  local secret = false
  for _, spec in pairs(doc.variants) do
    for field in pairs(spec.overrides or {}) do
      if rules.fields[field] and rules.fields[field].secret then
        spec.overrides[field] = MASK
        secret = true
      end
    end
    -- cjson writes an empty list as {}: leave empty lists out instead
    if spec.users and next(spec.users) == nil then spec.users = nil end
    if spec.buckets and next(spec.buckets) == nil then spec.buckets = nil end
  end
  if not secret then return text, false end
  return cjson.encode(doc), true
end
