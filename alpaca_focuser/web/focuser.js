// The focuser page: live status, control and chart through the ordinary Alpaca API; settings through
// POST /setup/v1/focuser/<n>/settings. Every value is shown with textContent, never as HTML.
import { Focuser, postJSON, say } from "./alpaca.js";
import { drawChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const panel = $("control");
const number = panel.dataset.device;
const absolute = panel.dataset.absolute === "1";
let hasTempComp = null; // TempCompAvailable, asked once per connection (the sensor is known once connected)
const focuser = new Focuser(number);
const POLL_MS = 500;
const HOUR = 3600;

let target = null; // the target of a move this page started, while it runs
let moving = false;
let connected = false;
let points = []; // chart points {t, pos, temp}
let events = []; // temperature-compensation corrections
let lastPoint = 0;

function message(text, isError) { say($("message"), text, isError); }

function setMoving(value) {
  moving = value;
  document.body.classList.toggle("moving", value);
}

function setConnected(value) {
  connected = value;
  document.body.classList.toggle("connected", value);
  for (const button of panel.querySelectorAll(".step, #move, #halt")) button.disabled = !value;
  const toggle = $("tempcomp-toggle");
  if (toggle) toggle.disabled = !value;
}

function addPoint(position, temperature) {
  const now = Date.now() / 1000;
  // Twice a second while moving or when the position changed, so the chart follows a move; every 5 s otherwise,
  // like the server's history.
  const previous = points.length ? points[points.length - 1] : null;
  const changed = previous !== null && previous.pos !== position;
  if (now - lastPoint < (moving || changed ? 0.4 : 5)) return;
  lastPoint = now;
  points.push({ t: now, pos: position, temp: temperature });
  points = points.filter((p) => p.t >= now - HOUR);
  redraw();
}

function redraw() { drawChart($("chart"), points, events, Date.now() / 1000); }

async function refresh() {
  try {
    const isConnected = await focuser.get("connected");
    $("connected").textContent = isConnected ? "yes" : "no";
    setConnected(isConnected);
    if (!isConnected) {
      hasTempComp = null;
      for (const id of ["position", "moving", "temperature", "tempcomp", "target-shown"]) $(id).textContent = "-";
      target = null;
      setMoving(false);
      return;
    }
    if (hasTempComp === null) {
      hasTempComp = Boolean(await focuser.get("tempcompavailable"));
      $("tempcomp-control").hidden = !hasTempComp;
    }
    const [state, tempComp] = await Promise.all([focuser.state(), hasTempComp ? focuser.get("tempcomp") : null]);
    setMoving(Boolean(state.IsMoving));
    if (!moving) target = null;
    $("moving").textContent = moving ? "yes" : "no";
    $("position").textContent = "Position" in state ? String(state.Position) : "n/a (relative)";
    $("target-shown").textContent = target === null ? "-" : String(target);
    const temperature = "Temperature" in state ? state.Temperature : null;
    $("temperature").textContent = temperature === null ? "n/a" : temperature.toFixed(1) + " °C";
    $("tempcomp").textContent = hasTempComp ? (tempComp ? "on" : "off") : "n/a";
    const toggle = $("tempcomp-toggle");
    if (toggle && document.activeElement !== toggle) toggle.checked = Boolean(tempComp);
    addPoint("Position" in state ? state.Position : null, temperature);
  } catch (err) {
    message(err.message, true);
  }
}

async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

function action(handler) {
  return async (event) => {
    if (event) event.preventDefault();
    try {
      message("");
      await handler();
    } catch (err) {
      message(err.message, true);
    }
    refresh();
  };
}

async function step(steps) {
  if (!absolute) {
    await focuser.put("move", { Position: String(steps) });
    return;
  }
  // From the move in progress when this page started it (two quick "+100" make +200), else from where it is.
  const from = moving && target !== null ? target : await focuser.get("position");
  const maxStep = await focuser.get("maxstep");
  const wanted = Math.min(Math.max(from + steps, 0), maxStep);
  await focuser.put("move", { Position: String(wanted) });
  target = wanted;
  setMoving(true);
}

$("connect").addEventListener("click", action(() => focuser.put("connected", { Connected: "true" }).then(learned)));
$("disconnect").addEventListener("click", action(() => focuser.put("connected", { Connected: "false" })));
$("halt").addEventListener("click", action(async () => { await focuser.put("halt"); target = null; }));
for (const button of panel.querySelectorAll(".step")) {
  button.addEventListener("click", action(() => step(Number(button.dataset.steps))));
}
if ($("move-form")) {
  $("move-form").addEventListener("submit", action(async () => {
    const value = $("target").value.trim();
    if (!/^-?\d+$/.test(value)) throw new Error("Enter a whole number of steps");
    await focuser.put("move", { Position: value });
    const maxStep = await focuser.get("maxstep");
    target = Math.min(Math.max(Number(value), 0), maxStep);
    setMoving(true);
  }));
}
if ($("tempcomp-toggle")) {
  $("tempcomp-toggle").addEventListener("change", action(() =>
    focuser.put("tempcomp", { TempComp: $("tempcomp-toggle").checked ? "true" : "false" })));
}

// --- chart history ------------------------------------------------------------------------------------------
async function loadHistory() {
  try {
    const reply = await fetch("/setup/v1/focuser/" + number + "/history", { cache: "no-store" });
    if (!reply.ok) throw new Error("history: HTTP " + reply.status);
    const history = await reply.json();
    const samples = history.samples.map((s) => ({ t: s[0], pos: s[1], temp: s[2] }));
    const last = samples.length ? samples[samples.length - 1].t : 0;
    points = samples.concat(points.filter((p) => p.t > last));
    events = Array.isArray(history.tempcomp_events) ? history.tempcomp_events : [];
    document.querySelector(".legend .mark").hidden = events.length === 0;
    redraw();
  } catch (err) {
    message(err.message, true);
  }
}

// --- learned temperature coefficient (when the focuser offers it) -------------------------------------------
async function learned() {
  try {
    const actions = (await focuser.get("supportedactions")).map((a) => a.toLowerCase());
    if (!actions.includes("tempcomplearned")) return;
    const result = JSON.parse(await focuser.put("action", { Action: "TempCompLearned", Parameters: "" }));
    $("learned").hidden = false;
    const known = result.coefficient !== null && result.coefficient !== undefined;
    $("learned-value").textContent = known
      ? Number(result.coefficient).toFixed(1) + " steps/°C from " + result.points + " points over " +
        Number(result.span_c).toFixed(1) + " °C (r² " + Number(result.r2).toFixed(2) + ")"
      : "not enough data yet (" + result.points + " points)";
    $("learned-apply").disabled = !known;
  } catch (err) {
    // Not connected yet, or an older server: the section stays hidden.
  }
}
$("learned-apply").addEventListener("click", action(async () => {
  await focuser.put("action", { Action: "TempCompLearned", Parameters: "apply" });
  message("Learned coefficient applied and saved.");
  await learned();
}));

// --- settings form ------------------------------------------------------------------------------------------
const form = $("settings-form");

function fieldValue(field) {
  return field.type === "checkbox" ? (field.checked ? "true" : "false") : field.value;
}

function showDriverFields() {
  const driver = $("f-driver") ? $("f-driver").value : "";
  for (const box of form.querySelectorAll(".field[data-drivers]")) {
    box.hidden = !box.dataset.drivers.split(" ").includes(driver);
  }
}

function clearErrors() {
  for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const changes = {};
  for (const field of form.querySelectorAll("[name]")) {
    if (field.closest(".field").hidden) continue;
    const value = fieldValue(field);
    if (value !== field.dataset.initial) changes[field.name] = field.type === "checkbox" ? field.checked : value;
  }
  if (Object.keys(changes).length === 0) {
    say($("settings-message"), "Nothing changed.");
    return;
  }
  $("save").disabled = true;
  say($("settings-message"), "Saving…");
  try {
    const { body } = await postJSON("/setup/v1/focuser/" + number + "/settings", changes);
    if (body.ok) {
      for (const name of Object.keys(changes)) form.elements[name].dataset.initial = fieldValue(form.elements[name]);
      say($("settings-message"), body.message);
      if (body.applied.includes("name")) {
        const title = "Focuser " + number + ": " + form.elements.name.value;
        document.querySelector("h1").textContent = title;
        document.title = title;
      }
    } else {
      const field = body.key ? form.elements[body.key] : null;
      if (field && $("e-" + body.key) && !field.closest(".field").hidden) {
        $("e-" + body.key).textContent = body.error;
        field.setAttribute("aria-invalid", "true");
        field.focus();
        say($("settings-message"), "Not saved: see the message next to " +
          field.closest(".field").querySelector("label").textContent + ". Nothing was changed.", true);
      } else {
        say($("settings-message"), "Not saved: " + body.error, true);
      }
    }
  } catch (err) {
    say($("settings-message"), "Not saved: " + err.message, true);
  } finally {
    $("save").disabled = false;
  }
});
if ($("f-driver")) $("f-driver").addEventListener("change", showDriverFields);

// --- start ----------------------------------------------------------------------------------------------------
setConnected(false);
window.addEventListener("resize", redraw);
document.addEventListener("nightmode", redraw);
loadHistory();
setInterval(loadHistory, 60000);
learned();
poll();
