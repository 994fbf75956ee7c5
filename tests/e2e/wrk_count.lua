-- wrk script for the live-update tests: counts every response by status and by the upstream
-- that answered (x-served-by), and prints the totals with wrk's error counters when done.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local key = status .. " " .. (headers["x-served-by"] or "-")
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts")) do
      total[key] = (total[key] or 0) + n
    end
  end
  io.write("requests ", summary.requests, "\n")
  for name, n in pairs(summary.errors) do
    io.write("error ", name, " ", n, "\n")
  end
  for key, n in pairs(total) do
    io.write("response ", n, " ", key, "\n")
  end
end
