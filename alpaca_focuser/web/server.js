// The server page: live status of every running focuser (through the Alpaca API), adding a focuser and
// removing one at the next start (through the setup endpoints). Values are shown with textContent only.
import { Focuser, postJSON, say } from "./alpaca.js";

const $ = (id) => document.getElementById(id);
const cards = Array.from(document.querySelectorAll("#devices .card"));

async function refreshCard(card) {
  const focuser = new Focuser(card.dataset.device);
  const field = (name) => card.querySelector('[data-field="' + name + '"]');
  try {
    const connected = await focuser.get("connected");
    field("connected").textContent = connected ? "yes" : "no";
    if (!connected) {
      field("position").textContent = field("moving").textContent = "-";
      return;
    }
    const items = await focuser.get("devicestate");
    const state = Object.fromEntries(items.map((item) => [item.Name, item.Value]));
    field("position").textContent = "Position" in state ? String(state.Position) : "n/a";
    field("moving").textContent = state.IsMoving ? "yes" : "no";
  } catch (err) {
    field("connected").textContent = "error: " + err.message;
  }
}

async function poll() {
  await Promise.all(cards.filter((c) => c.dataset.running === "1").map(refreshCard));
  setTimeout(poll, 1000);
}

for (const card of cards) {
  const button = card.querySelector("button.enable");
  button.addEventListener("click", async () => {
    const enable = button.dataset.enable === "true";
    const name = card.querySelector("a, .name").textContent;
    if (!enable && !window.confirm("Stop serving " + name + " from the next start? Its settings stay in the " +
      "file and the other focusers keep their device numbers.")) return;
    const { body } = await postJSON("/setup/v1/focuser/" + card.dataset.device + "/settings", { enabled: enable });
    if (body.ok) {
      window.location.reload();
    } else {
      say($("list-message"), "Not changed: " + body.error, true);
    }
  });
}

const form = $("add-form");
function showPort() {
  const serial = $("add-driver").dataset.serial.split(" ");
  $("add-port-field").hidden = !serial.includes($("add-driver").value);
}
$("add-driver").addEventListener("change", showPort);
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
  const data = { driver: $("add-driver").value, name: $("add-name").value };
  if (!$("add-port-field").hidden) data.port = $("add-port").value;
  const { body } = await postJSON("/setup/focusers", data);
  if (body.ok) {
    say($("add-message"), body.message);
    setTimeout(() => window.location.reload(), 1500);
  } else if (body.key && $("add-e-" + body.key)) {
    $("add-e-" + body.key).textContent = body.error;
    say($("add-message"), "Not added: see the message next to the field.", true);
  } else {
    say($("add-message"), "Not added: " + body.error, true);
  }
});

showPort();
poll();
