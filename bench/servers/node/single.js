// Node.js socket.io 4.8, one process, default options; `--recovery MS` turns on the
// in-memory connection state recovery (maxDisconnectionDuration MS).
// node single.js [--port 3000] [--recovery MS]
const { createServer } = require("node:http");
const { Server } = require("socket.io");
const contract = require("./contract");

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const port = arg("--port", 3000);
const recovery = arg("--recovery", 0);
const httpServer = createServer();
const io = new Server(httpServer, recovery > 0 ? { connectionStateRecovery: { maxDisconnectionDuration: recovery } } : {});
contract(io);
httpServer.listen(port, "127.0.0.1", () => console.log(`LISTENING ${port}`));
process.on("SIGTERM", () => process.exit(0));
