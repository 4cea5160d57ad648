// A small Alpaca client for the setup pages: they use the ordinary device API, exactly as any client would.
const clientId = 1 + Math.floor(Math.random() * 65535);
let transaction = 0;

export class AlpacaError extends Error {}

export class Focuser {
  constructor(number) {
    this.base = "/api/v1/focuser/" + number + "/";
  }

  async call(verb, member, params) {
    transaction += 1;
    const ids = { ClientID: String(clientId), ClientTransactionID: String(transaction) };
    let reply;
    if (verb === "GET") {
      reply = await fetch(this.base + member + "?" + new URLSearchParams(ids), { cache: "no-store" });
    } else {
      reply = await fetch(this.base + member, {
        method: "PUT",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(Object.assign(ids, params || {})),
      });
    }
    if (!reply.ok) throw new AlpacaError(member + ": HTTP " + reply.status + " " + (await reply.text()).trim());
    const body = await reply.json();
    if (body.ErrorNumber !== 0) {
      throw new AlpacaError(body.ErrorMessage + " (0x" + body.ErrorNumber.toString(16).toUpperCase() + ")");
    }
    return body.Value;
  }

  get(member) { return this.call("GET", member); }
  put(member, params) { return this.call("PUT", member, params); }

  // DeviceState as an object: {IsMoving, Position?, Temperature?, TimeStamp}
  async state() {
    const items = await this.get("devicestate");
    return Object.fromEntries(items.map((item) => [item.Name, item.Value]));
  }
}

// POST a JSON object to one of the setup endpoints; resolves to {status, body}. Never throws on 4xx/5xx: the
// body says what is wrong, and the caller shows it next to the right field.
export async function postJSON(url, data) {
  const reply = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
  });
  let body;
  try {
    body = await reply.json();
  } catch (err) {
    body = { ok: false, error: "HTTP " + reply.status + " " + reply.statusText };
  }
  return { status: reply.status, body };
}

// Put a message in an element as text (never as HTML).
export function say(element, text, isError) {
  element.textContent = text;
  element.classList.toggle("error", Boolean(isError));
}
