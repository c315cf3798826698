// Runs autocannon 9 with a client certificate and prints its result as one JSON line.
// argv[2]: JSON {url, cert, key, ca, connections, duration, method, body, headers,
//                uniquePrefix, uniqueSuffix, overallRate}
// overallRate (optional): requests per second over all connections, instead of flat out.
// With uniquePrefix/uniqueSuffix every request body is prefix + counter + suffix (creates
// need unique names).
const fs = require("fs");
const autocannon = require("autocannon");
const cfg = JSON.parse(process.argv[2]);
const opts = {
  url: cfg.url,
  connections: cfg.connections,
  duration: cfg.duration,
  amount: cfg.amount,
  pipelining: 1,
  timeout: 30,
  tlsOptions: {
    cert: fs.readFileSync(cfg.cert),
    key: fs.readFileSync(cfg.key),
    ca: fs.readFileSync(cfg.ca),
  },
  method: cfg.method || "GET",
  headers: cfg.headers || {},
};
if (cfg.overallRate !== undefined) {
  opts.overallRate = cfg.overallRate;
}
if (cfg.uniquePrefix !== undefined) {
  let n = 0;
  opts.requests = [{
    method: cfg.method,
    setupRequest: (req) => {
      n += 1;
      req.body = cfg.uniquePrefix + n + cfg.uniqueSuffix;
      return req;
    },
  }];
} else if (cfg.body !== undefined) {
  opts.body = cfg.body;
}
autocannon(opts, (err, result) => {
  if (err) { console.error(err); process.exit(1); }
  const out = {
    requests: result.requests.total,
    duration: result.duration,
    rps: result.requests.total / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodeStats: result.statusCodeStats,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
});
