// The page's side of the app shell: registers the service worker (/sw.js) and, when a new
// version has installed and waits, shows "A new version is ready — Update". Update tells the
// waiting worker to take over; every page it then controls (this tab and the app's other
// tabs) reloads once, so every file a page runs comes from one version. Until the user
// chooses, pages keep running (and the old worker keeps serving) the version they started with.
// The names the page and the worker share are exported here; /sw.js imports them, so this
// module must not touch the page (document, window) at its top level.

export const SHELL_CACHE_PREFIX = "sitecomms-shell-";
export const OUTBOX_SYNC_TAG = "sitecomms-outbox"; // the Background Sync tag of the outbox
export const WorkerMessage = Object.freeze({
  SKIP_WAITING: "skip-waiting", // page -> waiting worker: take over now
});

const BANNER_ID = "shell-update";

// Registers the worker; resolves to the registration, or null where service workers are
// unavailable or registration failed (e.g. offline: the page then runs as it is).
export async function installShell() {
  if (!("serviceWorker" in navigator)) return null;
  const container = navigator.serviceWorker;
  let reloading = false;
  container.addEventListener("controllerchange", () => {
    // The worker never claims pages, so a controller changes only when a waiting version takes
    // over — asked for here or in another tab. Either way this page's files are now the old
    // version's: it reloads, once.
    if (reloading) return;
    reloading = true;
    location.reload();
  });
  let registration;
  try {
    registration = await container.register("/sw.js", { type: "module", scope: "/", updateViaCache: "none" });
  } catch (error) {
    console.warn("SiteComms: the service worker could not be registered:", error.message);
    return null;
  }
  const offer = (worker) => showBanner(() => worker.postMessage({ type: WorkerMessage.SKIP_WAITING }));
  const offerWhenWaiting = () => {
    // A waiting worker with a controller present is an update; without one it is the first install.
    if (registration.waiting && container.controller) offer(registration.waiting);
  };
  offerWhenWaiting();
  registration.addEventListener("updatefound", () => {
    const installing = registration.installing;
    if (!installing) return;
    installing.addEventListener("statechange", () => {
      if (installing.state === "installed") offerWhenWaiting();
    });
  });
  return registration;
}

function showBanner(update) {
  document.getElementById(BANNER_ID)?.remove(); // a newer waiting worker replaces the offer
  const banner = document.createElement("div");
  banner.id = BANNER_ID;
  banner.className = "notice";
  banner.setAttribute("role", "status");
  const text = document.createElement("span");
  text.textContent = "A new version is ready";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary small";
  button.textContent = "Update";
  button.addEventListener("click", () => {
    button.disabled = true;
    update();
  });
  banner.append(text, button);
  document.body.prepend(banner);
}
