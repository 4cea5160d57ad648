// Live panel of the focuser setup page. It uses the ordinary Alpaca API, exactly as a client would.
(function () {
  "use strict";
  const panel = document.getElementById("control");
  const base = "/api/v1/focuser/" + panel.dataset.device + "/";
  const clientId = 1 + Math.floor(Math.random() * 65535);
  let transaction = 0;
  const $ = (id) => document.getElementById(id);

  async function call(verb, member, params) {
    transaction += 1;
    const ids = { ClientID: String(clientId), ClientTransactionID: String(transaction) };
    let reply;
    if (verb === "GET") {
      reply = await fetch(base + member + "?" + new URLSearchParams(ids));
    } else {
      reply = await fetch(base + member, {
        method: "PUT",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(Object.assign(ids, params || {})),
      });
    }
    if (!reply.ok) throw new Error(member + ": HTTP " + reply.status + " " + (await reply.text()));
    const body = await reply.json();
    if (body.ErrorNumber !== 0) throw new Error(body.ErrorMessage + " (0x" + body.ErrorNumber.toString(16) + ")");
    return body.Value;
  }

  function show(message) { $("message").textContent = message; }

  async function refresh() {
    try {
      const connected = await call("GET", "connected");
      $("connected").textContent = connected ? "yes" : "no";
      if (!connected) {
        $("moving").textContent = $("position").textContent = $("temperature").textContent = "-";
        return;
      }
      const state = await call("GET", "devicestate");
      const values = Object.fromEntries(state.map((item) => [item.Name, item.Value]));
      $("moving").textContent = values.IsMoving ? "yes" : "no";
      $("position").textContent = "Position" in values ? String(values.Position) : "n/a (relative)";
      $("temperature").textContent = "Temperature" in values ? values.Temperature.toFixed(1) + " °C" : "n/a";
    } catch (err) {
      show(err.message);
    }
  }

  function action(handler) {
    return async () => {
      try { show(""); await handler(); } catch (err) { show(err.message); }
      refresh();
    };
  }

  $("connect").addEventListener("click", action(() => call("PUT", "connected", { Connected: "true" })));
  $("disconnect").addEventListener("click", action(() => call("PUT", "connected", { Connected: "false" })));
  $("halt").addEventListener("click", action(() => call("PUT", "halt")));
  $("move").addEventListener("click", action(() => {
    const value = $("target").value.trim();
    if (!/^-?\d+$/.test(value)) throw new Error("Enter a whole number of steps");
    return call("PUT", "move", { Position: value });
  }));
  refresh();
  setInterval(refresh, 500);
})();
