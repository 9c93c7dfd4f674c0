// The search page: asks /api/search and draws one card a result. Every string from the server goes
// into the page through textContent or setAttribute, never as HTML, so file names cannot inject.
// <body> carries data-ready="true" (and image counts) once the results and their images settled.
"use strict";

const form = document.getElementById("search-form");
const queryInput = document.getElementById("query");
const kInput = document.getElementById("k");
const statusLine = document.getElementById("status");
const resultsBox = document.getElementById("results");

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(value) {
  return String(Number(value.toFixed(3)));
}

function mediaFragment(start, end) {
  if (start === null && end === null) return "";
  return end === null ? "#t=" + seconds(start || 0) : "#t=" + seconds(start || 0) + "," + seconds(end);
}

function clock(value) {
  const tenths = Math.round(value * 10);
  const whole = Math.floor(tenths / 10);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = String(whole % 60).padStart(2, "0");
  const text = hours ? hours + ":" + String(minutes).padStart(2, "0") + ":" + secs : minutes + ":" + secs;
  return tenths % 10 ? text + "." + (tenths % 10) : text;
}

function timeRange(start, end) {
  if (start === null && end === null) return "";
  return clock(start || 0) + "\u2013" + (end === null ? "end" : clock(end));
}

function countImages() {
  const all = resultsBox.querySelectorAll("img.keyframe");
  const loaded = resultsBox.querySelectorAll('img.keyframe[data-state="loaded"]').length;
  const failed = resultsBox.querySelectorAll('img.keyframe[data-state="failed"]').length;
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.imagesFailed = String(failed);
  document.body.dataset.imagesTotal = String(all.length);
  document.body.dataset.ready = String(loaded + failed === all.length);
}

function keyframe(url, number, path) {
  const image = element("img", "keyframe");
  image.alt = "keyframe " + number + " of " + path;
  image.decoding = "async";
  const settle = () => {
    image.dataset.state = image.naturalWidth > 0 ? "loaded" : "failed";
    countImages();
  };
  image.addEventListener("load", settle);
  image.addEventListener("error", settle);
  image.src = url;
  return image;
}

function card(result) {
  // display_path (bytes of a name that are not UTF-8 shown as \xNN) comes where it differs from path
  const name = result.display_path || result.path;
  const item = element("li", "card");
  item.dataset.rank = String(result.rank);
  item.dataset.row = String(result.row);
  item.dataset.score = result.score.toFixed(6);
  const box = element("div", "player-box");
  const player = element("video", "player");
  player.preload = "none";
  if (result.thumbnails.length) player.poster = result.thumbnails[0];
  player.src = result.media + mediaFragment(result.start_s, result.end_s);
  const play = element("button", "play", "\u25b6");
  play.type = "button";
  play.setAttribute("aria-label", "play " + name);
  play.addEventListener("click", () => {
    player.controls = true; // native controls come with the first click: idle control bars are noise
    play.hidden = true;
    player.play();
  });
  box.append(player, play);
  item.append(box);
  if (result.thumbnails.length) {
    const strip = element("div", "strip");
    result.thumbnails.forEach((url, n) => strip.append(keyframe(url, n + 1, name)));
    item.append(strip);
  } else {
    item.append(element("div", "no-thumbnails", "no thumbnails"));
  }
  const meta = element("div", "meta");
  meta.append(element("span", "rank", "#" + result.rank));
  const score = element("span", "score", result.score.toFixed(4));
  score.title = "cosine similarity";
  meta.append(score);
  const span = timeRange(result.start_s, result.end_s);
  if (span) meta.append(element("span", "range", span));
  item.append(meta);
  const path = element("p", "path", name);
  path.title = name;
  item.append(path);
  return item;
}

function render(reply) {
  const section = element("section", "query");
  section.dataset.query = reply.query;
  const heading = element("h2");
  heading.append("Results for ", element("span", "query-text", reply.query), " ");
  heading.append(element("span", "count", "(" + reply.results.length + " in " + reply.took_ms + " ms)"));
  section.append(heading);
  if (reply.results.length) {
    const list = element("ol", "results");
    reply.results.forEach((result) => list.append(card(result)));
    section.append(list);
  } else {
    section.append(element("p", "empty", "No results: the index is empty."));
  }
  resultsBox.replaceChildren(section);
  countImages();
}

function showStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

async function search(query, k) {
  document.body.dataset.ready = "false";
  showStatus("Searching\u2026");
  const params = new URLSearchParams({ q: query, k: String(k) });
  try {
    const reply = await fetch("/api/search?" + params, { credentials: "same-origin" });
    const body = await reply.json();
    if (!reply.ok) {
      resultsBox.replaceChildren();
      showStatus(body.error || "The search failed (" + reply.status + ").", true);
      document.body.dataset.ready = "true";
      return;
    }
    showStatus("");
    render(body);
  } catch (error) {
    showStatus("The service did not answer: " + error.message, true);
    document.body.dataset.ready = "true";
  }
}

function chooseK(value) {
  // A k from the address that the menu lacks (e.g. ?k=6) gets its own entry; the server checks it.
  if (!Array.from(kInput.options).some((option) => option.value === value)) {
    kInput.append(new Option(value + " results", value));
  }
  kInput.value = value;
}

function fromAddress() {
  const params = new URLSearchParams(window.location.search);
  const query = params.get("q") || "";
  queryInput.value = query;
  if (params.get("k")) chooseK(params.get("k"));
  if (query.trim()) {
    search(query, kInput.value);
  } else {
    resultsBox.replaceChildren();
    document.body.dataset.ready = "true";
  }
}

async function showInfo() {
  const reply = await fetch("/api/info", { credentials: "same-origin" });
  if (!reply.ok) return;
  const info = await reply.json();
  const details = document.getElementById("details");
  const parts = [info.index && "index " + info.index, info.rows + " rows", info.model && "model " + info.model];
  details.replaceChildren(...parts.filter(Boolean).map((text) => element("span", "", text)));
  const caution = document.getElementById("caution");
  caution.textContent = info.caution ? "Caution: " + info.caution : "";
  caution.hidden = !info.caution;
  queryInput.maxLength = info.max_query_chars;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams({ q: queryInput.value, k: kInput.value });
  window.history.pushState(null, "", "/?" + params);
  search(queryInput.value, kInput.value);
});
window.addEventListener("popstate", fromAddress);
showInfo();
fromAddress();
