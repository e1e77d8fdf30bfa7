//! `pagewire simulate`: a signed Meta webhook, without Facebook.

use anyhow::{bail, Context};
use pagewire_testkit::{Kind, MetaBody};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The Meta app secret the gateway knows for this Page's app.
    #[arg(long, env = "PAGEWIRE_SIMULATE_APP_SECRET")]
    app_secret: String,
    /// The Page the event is for.
    #[arg(long)]
    page_id: String,
    /// What to send: message, quick_reply, postback, postback_referral, referral, ad_message,
    /// reaction, read, delivery, echo.
    #[arg(long, default_value = "message")]
    kind: String,
    /// The message text, or the payload / ref of postbacks, quick replies and referrals.
    #[arg(long)]
    text: Option<String>,
    /// The user (PSID) who sends it.
    #[arg(long, default_value = "6543210987654321")]
    sender: String,
    /// How many items to put in the one POST.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Put the items in `standby[]` instead of `messaging[]`.
    #[arg(long)]
    standby: bool,
    /// The gateway's webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/meta")]
    url: String,
    /// Print the body as sent.
    #[arg(long)]
    print_body: bool,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let Some(kind) = Kind::parse(&args.kind) else {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        bail!("unknown --kind `{}`; choose one of: {}", args.kind, names.join(", "));
    };
    if args.count == 0 || args.count > 1000 {
        bail!("--count must be between 1 and 1000 (Meta batches at most 1000 items)");
    }
    let text = args.text.clone().unwrap_or_else(|| default_text(kind).to_owned());
    let now = pagewire_core::Clock::now_ms(&pagewire_core::SystemClock);
    let items = (0..args.count)
        .map(|seq| {
            kind.item(
                &args.page_id,
                &args.sender,
                now + i64::try_from(seq).unwrap_or(0),
                &text,
                seq,
            )
        })
        .collect();
    let body = if args.standby {
        MetaBody::page().standby(&args.page_id, now, items)
    } else {
        MetaBody::page().messaging(&args.page_id, now, items)
    }
    .to_bytes();
    if args.print_body {
        println!("{}", String::from_utf8_lossy(&body));
    }

    let client = reqwest::Client::new();
    let size = body.len();
    let response = pagewire_testkit::post_signed(&client, &args.url, &args.app_secret, body)
        .await
        .with_context(|| format!("could not reach {} — is `pagewire serve` running?", args.url))?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    println!(
        "POST {} ({} {}, {size} bytes) → {status} {answer}",
        args.url,
        args.count,
        kind.name()
    );
    if !status.is_success() {
        bail!("the gateway refused the webhook: {status}");
    }
    Ok(())
}

fn default_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Postback | Kind::PostbackWithReferral => "TRACK_ORDER",
        Kind::QuickReply => "CONFIRM_YES",
        Kind::Referral => "summer_sale",
        _ => "Hello from Pagewire 👋 äöå",
    }
}
