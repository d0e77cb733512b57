-- wrk script: POST one image file as the raw body, count responses by status, and print
-- one line "WRK_RESULT {json}" with throughput, latency percentiles and errors.
-- Usage: wrk ... -s post_image.lua http://host:port/predict -- <image file> <content type>

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local body = file:read("*a")
   file:close()
   local headers = { ["Content-Type"] = args[2] or "application/octet-stream" }
   request_bytes = wrk.format("POST", nil, headers, body)
   statuses = {}
end

function request()
   return request_bytes
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + n
      end
   end
   local by_status = {}
   for status, n in pairs(counts) do
      table.insert(by_status, string.format('"%d": %d', status, n))
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK_RESULT {"duration_us": %d, "requests": %d, "statuses": {%s}, ' ..
      '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}\n',
      summary.duration, summary.requests, table.concat(by_status, ", "),
      errors.connect, errors.read, errors.write, errors.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99)))
end
