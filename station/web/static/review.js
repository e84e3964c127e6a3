// The QA desk's review pages: this entry starts the desk (the user in the header; the login page when nobody is
// logged in), then the page's own module, named by <body data-page>: the queue, the image editor, the dataset page
// or the statistics. Plain ES modules, served as they are (no build step); only the page's module is loaded.
import { startDesk } from "./common.js";

const PAGES = {
  queue: () => import("./review-queue.js").then((m) => m.initQueue()),
  editor: () => import("./review-editor.js").then((m) => m.initEditor()),
  dataset: () => import("./review-dataset.js").then((m) => m.initDataset()),
  stats: () => import("./stats.js").then((m) => m.initStats()),
};

const start = PAGES[document.body.dataset.page];
startDesk().then((me) => { if (me && start) start(); });
