// Node.js socket.io 4.8 on the official @socket.io/redis-adapter 8.3 (redis 4.7): one node of
// a cluster; run two of them on different ports against the same redis-server.
// node redis.js [--port 3000] --redis redis://127.0.0.1:6379
const { createServer } = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const contract = require("./contract");

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}

async function main() {
  const port = Number(arg("--port", 3000));
  const pub = createClient({ url: arg("--redis", "redis://127.0.0.1:6379") });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const httpServer = createServer();
  const io = new Server(httpServer, { adapter: createAdapter(pub, sub) });
  contract(io);
  httpServer.listen(port, "127.0.0.1", () => console.log(`LISTENING ${port}`));
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
process.on("SIGTERM", () => process.exit(0));
