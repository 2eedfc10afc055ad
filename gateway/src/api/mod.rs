//! HTTP handlers: the OpenAI API and the admin API.

pub mod admin;
pub mod chat;
pub mod dashboard;
pub mod invoices;
pub mod models;
