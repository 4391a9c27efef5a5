// The benchmark contract on namespace "/": join(room), broadcast(payload) -> "tick" to
// room "bench", echo(payload, ack).
module.exports = function contract(io) {
  io.on("connection", (socket) => {
    socket.on("join", (room) => socket.join(room));
    socket.on("broadcast", (payload) => io.to("bench").emit("tick", payload));
    socket.on("echo", (payload, ack) => {
      if (typeof ack === "function") ack(payload);
    });
  });
};
