//! The web console (`strife gateway --web-listen`, on in `strife dev`) in headless Chromium
//! through WebDriver, against a real `strife dev` network: the payer's and the operator's
//! pages, sessions, CSRF and roles. Screenshots land in `target/console-screenshots/`. And the
//! console and metrics ports under outside attack (slow bodies and headers, session floods,
//! lockout as a weapon), with a legitimate client's success rate measured meanwhile.

mod attacks;
mod pages;
