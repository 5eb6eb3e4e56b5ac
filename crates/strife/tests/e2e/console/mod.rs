//! The web console (`strife gateway --web-listen`, on in `strife dev`) in headless Chromium
//! through WebDriver, against a real `strife dev` network: the payer's and the operator's
//! pages, sessions, CSRF and roles. Screenshots land in `target/console-screenshots/`.

mod pages;
