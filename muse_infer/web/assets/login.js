// Trade the token for the session cookie (POST /api/session with it as a bearer token), then reload.
"use strict";
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = document.getElementById("status");
  const token = document.getElementById("token").value;
  const reply = await fetch("/api/session", {
    method: "POST",
    headers: { Authorization: "Bearer " + token },
    credentials: "same-origin",
  });
  if (reply.ok) {
    window.location.reload();
  } else {
    status.textContent = "That token was not accepted.";
    status.classList.add("error");
  }
});
