// node-failover: ioredis, with its defaults, finding the master only through the Sentinel
// endpoint given; driven by the e2e client matrix. One line per write: "ok <i> <server addr>"
// once the master took it (and, with --wait N, N replicas acknowledged it; else
// "unacked <i> <addr>"), or "err <i> <error>". Errors are retried after a short pause.
"use strict";

const Redis = require("ioredis");

function parse(argv) {
  const args = {};
  for (let i = 0; i + 1 < argv.length; i += 2) {
    if (!argv[i].startsWith("--")) throw new Error(`expected --name value, got ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const args = parse(process.argv.slice(2));
  const [host, port] = (args.sentinel || "127.0.0.1:26379").split(":");
  if (!args.master) throw new Error("--master is required");
  const replicas = Number(args.wait || 0);
  const deadline = Date.now() + Number(args.duration || 120) * 1000;
  const interval = Number(args["interval-ms"] || 50);
  const prefix = args["key-prefix"] || "vigil:ioredis";
  // Defaults but for where to look and the instances' password.
  const redis = new Redis({
    sentinels: [{ host, port: Number(port) }],
    name: args.master,
    password: args.password,
  });
  redis.on("error", () => {}); // reported per write below
  for (let i = 0; Date.now() < deadline; i++) {
    try {
      await redis.set(`${prefix}:${i}`, String(i));
      const info = await redis.client("INFO");
      const laddr = / laddr=(\S+)/.exec(` ${info}`);
      const acked = replicas > 0 ? await redis.wait(replicas, 1000) : 0;
      const verdict = replicas === 0 || acked >= replicas ? "ok" : "unacked";
      console.log(`${verdict} ${i} ${laddr ? laddr[1] : "?"}`);
      await sleep(interval);
    } catch (e) {
      console.log(`err ${i} ${e.name}: ${String(e.message).replace(/\n/g, " ")}`);
      await sleep(100);
    }
  }
  redis.disconnect();
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
