#!/usr/bin/env python3
"""Generate the tunewise "helpdesk" demo dataset (customer-support intents).

Every message is composed from the hand-written building blocks below; no
third-party dataset is used. The generator is seeded, so running

    python examples/data/make_helpdesk.py

rewrites examples/data/helpdesk/{train,test}.jsonl byte-identically.
Standard library only, so it runs without installing tunewise.

The blocks are deliberately a little messy (cross-intent context sentences,
terse fragments, typos, lowercase chat) so that a bag-of-words baseline lands
around 85-95% accuracy rather than 100%: a demo where everything scores
perfectly shows nothing.
"""

from __future__ import annotations

import json
import re
import random
from pathlib import Path

SEED = 20261125
OUT_DIR = Path(__file__).resolve().parent / "helpdesk"
TEST_FRACTION = 0.2

# Mildly imbalanced: largest / smallest = 230 / 92 = 2.5. Sums to 1,200.
INTENT_COUNTS = {
    "delivery_status": 230,
    "refund_request": 195,
    "account_access": 170,
    "technical_issue": 160,
    "billing_question": 140,
    "product_question": 115,
    "cancel_subscription": 98,
    "change_address": 92,
}

CHANNEL_WEIGHTS = {"chat": 0.40, "email": 0.35, "web_form": 0.25}
VARIETY_WEIGHTS = {"en-US": 0.50, "en-GB": 0.25, "en-IN": 0.25}

# Tier mix differs a little per intent (enterprise customers write about seats,
# SSO and invoices more often) so tier slices are not all identical.
TIER_WEIGHTS = {
    "default": {"free": 0.50, "pro": 0.35, "enterprise": 0.15},
    "billing_question": {"free": 0.25, "pro": 0.45, "enterprise": 0.30},
    "account_access": {"free": 0.40, "pro": 0.35, "enterprise": 0.25},
    "technical_issue": {"free": 0.35, "pro": 0.40, "enterprise": 0.25},
    "cancel_subscription": {"free": 0.20, "pro": 0.60, "enterprise": 0.20},
}

# Difficulty knobs (tuned so TF-IDF + logistic regression scores ~85-95%).
P_VAGUE = 0.18           # request is worded so it fits several intents
P_CROSS_CONTEXT = 0.40   # add a sentence that uses another intent's vocabulary
P_SECONDARY_ASK = 0.08   # tack on a minor request belonging to a related intent
P_TYPO = 0.18            # message gets one or two typos
P_TERSE = {"chat": 0.35, "web_form": 0.30, "email": 0.0}

# --------------------------------------------------------------------------
# Slot values. Templates refer to these as {slot} (see SLOT_MAKERS).
# Product, plan and carrier names are invented.
# --------------------------------------------------------------------------

PRODUCTS = [
    "Aero desk lamp", "TrailLite backpack", "Nimbus earbuds", "Halo air purifier",
    "Cascade water bottle", "Summit rain jacket", "Orbit standing desk",
    "Loomwell wool throw", "Cinder coffee grinder", "Pebble smart scale",
    "Drift office chair", "Fjordline duvet cover", "Quill notebook set",
    "Tandem bike light", "Solace sleep mask", "Brightleaf planter",
    "Marlow chef's knife", "Vesper table fan", "Kettlewise electric kettle",
    "Ridge hiking boots", "Lumen webcam", "Harbor linen shirt",
]
SEATS_BY_TIER = {"free": [2, 3], "pro": [2, 3, 5, 8], "enterprise": [25, 40, 60, 150, 300]}
# The plan a customer mentions follows their tier in the (fictional) CRM.
PLANS_BY_TIER = {
    "free": ["Starter plan", "Basic plan", "free trial"],
    "pro": ["Pro plan", "monthly plan", "annual plan", "Plus membership"],
    "enterprise": ["Business plan", "Team plan", "enterprise plan", "annual plan"],
}
FEATURES = [
    "CSV export", "calendar sync", "shared inboxes", "the reporting dashboard",
    "the mobile app", "automations", "custom domains", "the API", "bulk import",
    "the browser extension", "saved replies", "the analytics page",
]
ERRORS = [
    "error 500", "a 'Something went wrong' message", "ERR_TIMEOUT",
    "error code E-{n3}", "a 403 Forbidden error", "a blank white page",
    "a 'request failed' banner", "error 502",
]
ACTIONS = [
    "save a draft", "export my report", "upload a file", "open the dashboard",
    "connect my calendar", "check out", "invite a teammate", "print a label",
    "edit my profile", "run a report",
]
DEVICES = [
    "Android phone", "iPhone", "iPad", "Windows laptop", "Mac", "Chromebook",
    "work PC", "tablet",
]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge"]
CITIES = {
    "en-US": ["Austin", "Denver", "Columbus", "Portland", "Raleigh", "Tucson"],
    "en-GB": ["Leeds", "Bristol", "Norwich", "Cardiff", "York", "Glasgow"],
    "en-IN": ["Pune", "Jaipur", "Kochi", "Indore", "Mysuru", "Lucknow"],
}
STREETS = [
    "Birch Lane", "Harbour View Road", "Maple Court", "Station Road",
    "Orchard Way", "Willow Crescent", "Hillside Avenue", "Mill Street",
]
COUNTRIES = ["Canada", "Ireland", "Germany", "Australia", "Singapore", "Mexico",
             "Norway", "New Zealand"]
LINE_ITEMS = ["Seat adjustment", "Prorated upgrade", "Platform fee",
              "Overage - API calls", "Storage add-on"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]
RELATIVE_DATES = [
    "yesterday", "last week", "two weeks ago", "on Monday", "last Friday",
    "a few days ago", "earlier today", "over a month ago", "last Tuesday",
]
CURRENCY = {"en-US": "${}", "en-GB": "£{}", "en-IN": "₹{}"}

# Sign-off names: invented, first names only, no surnames or contact details.
SIGNOFF_NAMES = {
    "en-US": ["Jordan", "Casey", "Taylor", "Morgan", "Riley", "Avery", "Jamie", "Dana"],
    "en-GB": ["Olly", "Hattie", "Rory", "Freya", "Callum", "Imogen", "Pip", "Nell"],
    "en-IN": ["Priya", "Arjun", "Neha", "Rohan", "Kavya", "Vikram", "Ishaan", "Meera"],
}


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Ctx:
    """Per-message state. Entity slots are remembered, so a message that says
    {product} or {amount} twice talks about the same thing both times."""

    def __init__(self, rng: random.Random, variety: str, tier: str):
        self.rng, self.variety, self.tier = rng, variety, tier
        self.memo: dict[str, str] = {}

    def remember(self, key: str, make) -> str:
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]


def _amount(ctx: Ctx) -> str:
    rng = ctx.rng
    if ctx.variety == "en-IN":
        value = str(rng.choice([499, 799, 1299, 2499, 3999, 5600, 899, 12000]))
    else:
        value = f"{rng.randint(5, 320)}.{rng.choice(['00', '99', '49', '50', '95'])}"
    return CURRENCY[ctx.variety].format(value)


def _other_amount(ctx: Ctx) -> str:
    """For "I was expecting ...": must differ from the {amount} in the message."""
    charged = ctx.memo.get("amount")
    while True:
        value = _amount(ctx)
        if value != charged:
            return value


def _date_abs(ctx: Ctx) -> str:
    rng = ctx.rng
    month, day = rng.choice(MONTHS), rng.randint(1, 28)
    if ctx.variety == "en-US":
        return f"{month} {day}" if rng.random() < 0.8 else f"{MONTHS.index(month) + 1}/{day}"
    if ctx.variety == "en-IN" and rng.random() < 0.3:
        return f"{day:02d}/{MONTHS.index(month) + 1:02d}"
    return f"{_ordinal(day)} {month}" if rng.random() < 0.6 else f"{day} {month}"


def _order_number(ctx: Ctx) -> int:
    return ctx.remember("order", lambda: ctx.rng.randint(10000, 99999))


def _order(ctx: Ctx) -> str:
    """A stand-alone reference: 'order #48213', '#48213', ..."""
    n = _order_number(ctx)
    return ctx.rng.choice([f"#{n}", f"order #{n}", f"order {n}", f"order no. {n}"])


def _order_no(ctx: Ctx) -> str:
    """Just the number, for templates that already say 'order'."""
    n = _order_number(ctx)
    return ctx.rng.choice([f"#{n}", f"#{n}", f"{n}", f"no. {n}"])


def _a_product(ctx: Ctx) -> str:
    product = _memo_choice("product", PRODUCTS)(ctx)
    return ("an " if product[0] in "AEIOU" else "a ") + product


def _memo_choice(key: str, options):
    return lambda ctx: ctx.remember(key, lambda: ctx.rng.choice(options))


def _other_browser(ctx: Ctx) -> str:
    first = _memo_choice("browser", BROWSERS)(ctx)
    return ctx.rng.choice([b for b in BROWSERS if b != first])


SLOT_MAKERS = {
    # remembered within a message
    "order": _order,
    "order_no": _order_no,
    "product": _memo_choice("product", PRODUCTS),
    "a_product": _a_product,
    "plan": lambda ctx: _memo_choice("plan", PLANS_BY_TIER[ctx.tier])(ctx),
    "feature": _memo_choice("feature", FEATURES),
    "error": _memo_choice("error", ERRORS),
    "device": _memo_choice("device", DEVICES),
    "browser": _memo_choice("browser", BROWSERS),
    "browser2": _other_browser,
    "city": lambda ctx: _memo_choice("city", CITIES[ctx.variety])(ctx),
    "street": lambda ctx: ctx.remember(
        "street", lambda: f"{ctx.rng.randint(2, 180)} {ctx.rng.choice(STREETS)}"),
    "country": _memo_choice("country", COUNTRIES),
    "amount": lambda ctx: ctx.remember("amount", lambda: _amount(ctx)),
    "other_amount": _other_amount,
    "date_abs": lambda ctx: ctx.remember("date_abs", lambda: _date_abs(ctx)),
    "seats": lambda ctx: ctx.remember("seats", lambda: str(ctx.rng.choice(SEATS_BY_TIER[ctx.tier]))),
    "tracking": lambda ctx: ctx.remember("tracking", lambda: f"PG{ctx.rng.randint(100000000, 999999999)}"),
    # drawn afresh each time
    "action": lambda ctx: ctx.rng.choice(ACTIONS),
    "line_item": lambda ctx: ctx.rng.choice(LINE_ITEMS),
    "month": lambda ctx: ctx.rng.choice(MONTHS),
    "date_rel": lambda ctx: ctx.rng.choice(RELATIVE_DATES),
    "n_days": lambda ctx: str(ctx.rng.randint(3, 21)),
    "n_months": lambda ctx: str(ctx.rng.randint(2, 30)),
    "n": lambda ctx: str(ctx.rng.randint(2, 12)),
    "n3": lambda ctx: str(ctx.rng.randint(100, 999)),
    "n4": lambda ctx: str(ctx.rng.randint(1000, 9999)),
    "n5": lambda ctx: str(ctx.rng.randint(10000, 99999)),
    "year": lambda ctx: str(ctx.rng.randint(2016, 2024)),
    "version": lambda ctx: f"{ctx.rng.randint(3, 6)}.{ctx.rng.randint(0, 14)}.{ctx.rng.randint(0, 9)}",
}

# --------------------------------------------------------------------------
# Per-intent building blocks.
#   openings: context that usually precedes the request
#   cores:    the request itself (always present unless the message is terse)
#   terse:    whole messages of a few words, for chat and web forms
#   details:  supporting facts
#   cross:    context that borrows another intent's vocabulary (the source of
#             realistic ambiguity, e.g. a refund request that mentions a late
#             delivery)
# --------------------------------------------------------------------------

INTENTS = {
    "refund_request": {
        "openings": [
            "I bought {a_product} on {date_abs}.",
            "I ordered the {product} ({order_no}) {date_rel}.",
            "My order {order_no} arrived {date_rel}.",
            "I returned the {product} {date_rel} using the prepaid label.",
            "I was charged {amount} for {order}.",
            "The {product} I received doesn't match the description.",
            "The {product} stopped working after {n_days} days.",
            "I sent the package back {date_rel}.",
            "{order} came in the wrong size.",
            "I received the {product} and I'm not happy with it.",
            "The {product} arrived damaged.",
        ],
        "cores": [
            "I'd like a refund, please.",
            "Can I get my money back?",
            "Please refund the {amount} to my card.",
            "How do I request a refund for {order}?",
            "I want a full refund.",
            "Could you process a refund for the {product}?",
            "I'd like to return it and get reimbursed.",
            "When will my refund be issued?",
            "It's been {n_days} days since I sent it back and I still haven't seen the refund.",
            "Please reverse the charge of {amount}.",
            "Can you at least refund the shipping fee?",
            "I want to send it back for a refund, not an exchange.",
            "Is it possible to get a partial refund?",
            "Can I get a refund or store credit for it?",
            "Please issue a refund to my original payment method.",
            "I need the {amount} returned to my account.",
            "Where is my refund for {order}?",
            "Your return policy says 30 days, so I'm asking for a refund.",
            "Refund me please, the item is defective.",
            "I'd like to start a return for {order}.",
            "What's the status of my refund?",
            "You said the refund was approved but nothing has shown up on my statement.",
            "I was told I'd get my money back within 5 business days.",
            "Can you credit the {amount} back?",
            "I want to return the {product} and get my money back.",
            "Please cancel the order and refund me.",
            "I'm requesting a refund under your satisfaction guarantee.",
            "How long do refunds usually take to go through?",
            "Can I get reimbursed for the damaged item?",
            "I never asked for the upgrade, please refund the {amount}.",
            "The {product} was broken on arrival and I want a refund.",
            "Could you send me a return label so I can get a refund?",
            "I'd like my money back for the unused months of my {plan}.",
            "Please refund the duplicate payment.",
            "I'd like to return this for a refund.",
            "Can the money go back on my card rather than as a voucher?",
        ],
        "terse": [
            "refund pls", "need a refund", "money back please", "refund for {order}",
            "where's my refund", "return and refund {order}", "i want a refund",
            "refund status?", "Refund request - {order}", "requesting refund",
            "refund not received yet", "broken item, refund",
        ],
        "details": [
            "The box was crushed and the {product} inside was cracked.",
            "I've attached photos of the damage.",
            "It's still unused and in the original packaging.",
            "The order number is {order_no}.",
            "I paid {amount} by credit card.",
            "The color is nothing like the photos on the website.",
            "It was a gift and they already have one.",
            "It doesn't fit.",
            "The return reference is RMA-{n4}.",
            "Your warehouse confirmed they received it {date_rel}.",
            "One of the two items was missing a part.",
        ],
        "cross": [
            "It arrived {n_days} days late and I'd already bought one elsewhere.",
            "The delivery was over a week late.",
            "I was charged {amount} but the invoice says it should have been less.",
            "I've already canceled my subscription.",
            "The app kept crashing so I never really used it.",
            "The courier left it in the rain and it got soaked.",
            "Tracking says it was delivered {date_rel} but the box was empty.",
            "I asked about the sizing before buying and was told it would fit.",
            "I couldn't log in for most of the month so I didn't get to use it.",
            "It was shipped to my old address and came back to you.",
        ],
    },
    "delivery_status": {
        "openings": [
            "I placed an order {date_rel} ({order_no}).",
            "I ordered {a_product} {date_rel}.",
            "My order {order_no} was supposed to arrive on {date_abs}.",
            "The tracking page for {order} hasn't updated in {n_days} days.",
            "I got an email saying my order shipped {date_rel}.",
            "I need the {product} for an event on {date_abs}.",
            "I ordered two things and only one has shown up.",
            "My {product} was due {date_rel}.",
        ],
        "cores": [
            "Where is my order?",
            "Can you tell me when my package will arrive?",
            "What's the status of {order}?",
            "My order still hasn't arrived.",
            "The tracking number doesn't work.",
            "Has my order shipped yet?",
            "It says delivered but I never got it.",
            "Could you check where my package is?",
            "When will {order} be delivered?",
            "The courier says it's out for delivery but nothing came.",
            "Is there an estimated delivery date for the {product}?",
            "My package has been stuck in transit for {n_days} days.",
            "Tracking says 'label created' and nothing since.",
            "Can you give me a tracking number for {order}?",
            "Why is my delivery so late?",
            "Is my order lost?",
            "The delivery window was {date_abs} and it's now past that.",
            "Can you chase the courier for me?",
            "How long does standard shipping usually take?",
            "Has {order} left the warehouse yet?",
            "I was expecting my {product} today, any update?",
            "It's been {n_days} days and still no sign of my order.",
            "Part of my order arrived, but not the {product}.",
            "Can you confirm the order was dispatched?",
            "Why does tracking show it going to the wrong city?",
            "Any news on when my stuff will turn up?",
            "Is there a delay with deliveries at the moment?",
            "Can I collect it from the depot instead?",
            "The delivery driver left a note but I was home all day.",
            "Will it get here before {date_abs}?",
            "I haven't received a shipping confirmation yet.",
            "Can you find out what's happening with my delivery?",
            "The tracking link just says 'pending'.",
        ],
        "terse": [
            "where is my order", "order status {order_no}", "tracking?",
            "still not delivered", "any update on {order}", "when will it arrive",
            "package not here yet", "no delivery yet", "where's {order}",
            "Delivery status {order}", "not received order", "eta for my order?",
        ],
        "details": [
            "The tracking number is {tracking}.",
            "I chose express delivery.",
            "I paid {amount} extra for next-day shipping.",
            "It was meant to be a birthday present.",
            "The last scan was at the {city} depot.",
            "Nobody has knocked or left a card.",
            "The estimated date on the confirmation email was {date_abs}.",
            "My neighbors haven't taken anything in for me either.",
        ],
        "cross": [
            "If it doesn't turn up by Friday I'll want a refund.",
            "I already paid {amount} for express shipping.",
            "I updated my address after ordering, so maybe that's the problem.",
            "I don't want to cancel, I just want to know where it is.",
            "Your website tracking page keeps showing an error.",
            "I was charged on {date_abs} so it should have shipped by now.",
            "I'd rather not ask for my money back, I just want the item.",
            "I can't log in to see the order page, so I'm asking here.",
        ],
    },
    "account_access": {
        "openings": [
            "I've been a customer since {year}.",
            "I tried to log in this morning on my {device}.",
            "I recently changed my phone.",
            "I'm the admin for our team's workspace.",
            "I got a new work email {date_rel}.",
            "I haven't used my account in a while.",
        ],
        "cores": [
            "I can't log in to my account.",
            "I forgot my password and the reset link isn't coming through.",
            "My account has been locked.",
            "The password reset email never arrives.",
            "How do I reset my password?",
            "I'm not receiving the two-factor code.",
            "It says my password is incorrect but I know it's right.",
            "I lost access to my authenticator app.",
            "Can you unlock my account?",
            "I can't sign in with Google anymore.",
            "How do I change the email address on my account?",
            "Someone else may have accessed my account.",
            "I think my account was hacked.",
            "The login page just keeps sending me back to the sign-in screen.",
            "The reset link says it has expired.",
            "I'm locked out after too many attempts.",
            "How do I add a new admin to our workspace?",
            "I can't remember which email I signed up with.",
            "My verification code is always invalid.",
            "I need to recover my account, I no longer have access to that email.",
            "Can you turn off two-factor so I can get back in?",
            "I keep getting 'account not found' when I try to log in.",
            "Please help me get back into my account.",
            "The SSO login for our company stopped working for me.",
            "How do I change my username?",
            "My account was deactivated and I don't know why.",
            "I want to transfer ownership of the account to a colleague.",
            "I get a 'session expired' message every time I sign in.",
            "I can't get into my account to download my invoices.",
            "I set up a new phone and now the login codes go to the old one.",
            "Can you verify my identity some other way so I can log in?",
        ],
        "terse": [
            "cant login", "password reset not working", "locked out",
            "2fa code not coming", "account locked pls help", "forgot password",
            "cant sign in", "Login issue", "reset link expired",
            "account hacked?", "lost 2FA device",
        ],
        "details": [
            "I've tried three different browsers.",
            "I checked my spam folder too.",
            "My username hasn't changed.",
            "I've already tried resetting it twice.",
            "The email on the account is my old work one.",
            "I'm using the {device}.",
            "The last time I logged in successfully was {date_rel}.",
        ],
        "cross": [
            "I need to get in to download an invoice for our finance team.",
            "I want to cancel eventually but I can't even get into the account.",
            "I think the problem started after your app update.",
            "I changed my email address last month.",
            "I'm still being billed for this account every month.",
            "I have an order on the way and can't check its status.",
            "The page shows {error} after I enter my details.",
            "I'm not after a refund, I just need to get back in.",
        ],
    },
    "billing_question": {
        "openings": [
            "I'm on the {plan}.",
            "I just looked at my bank statement.",
            "I got an invoice for {amount} {date_rel}.",
            "Our finance team is asking about last month's invoice.",
            "My card was charged {amount} on {date_abs}.",
            "We upgraded to the {plan} {date_rel}.",
        ],
        "cores": [
            "Why was I charged {amount}?",
            "I was charged twice this month.",
            "Can you explain the charges on my latest invoice?",
            "How do I update my credit card details?",
            "Where can I download my invoices?",
            "Can I switch from monthly to annual billing?",
            "Why did my bill go up?",
            "Do you offer a discount for nonprofits?",
            "Can you add our VAT number to the invoice?",
            "When is my next payment due?",
            "The payment failed, what do I need to do?",
            "Can I pay by bank transfer instead of card?",
            "What does the line item '{line_item}' mean?",
            "I think I'm being billed for more seats than we use.",
            "Is tax included in the price?",
            "My card was declined but there's money in the account.",
            "Can I get a receipt for {amount}?",
            "How is the prorated charge calculated when I upgrade?",
            "Can you change the billing address on our invoices?",
            "Why am I still being charged after the trial ended?",
            "Can you send invoices to our accounts team instead of me?",
            "I don't recognize this charge of {amount}.",
            "What currency will I be billed in?",
            "Is there a cheaper plan for small teams?",
            "Can I pay with a debit card?",
            "Can you split the invoice across two cost centers?",
            "The invoice shows the wrong company name.",
            "Can you put our organization's name on the invoice instead of mine?",
            "How do I get copies of last year's invoices for our accountant?",
            "What happens if my payment fails?",
            "Why was I charged before my billing date?",
            "The amount on the invoice doesn't match the price on your website.",
        ],
        "terse": [
            "invoice question", "charged twice??", "update card details",
            "why {amount} charge", "need invoice copy", "billing issue",
            "Billing query - {amount}", "wrong amount charged", "receipt please",
            "payment declined",
        ],
        "details": [
            "The charge appears as SHOPLY*SUBSCR on my statement.",
            "We have {seats} seats on the account.",
            "Our billing cycle starts on the 1st.",
            "The invoice number is INV-{n5}.",
            "The price I signed up at was lower.",
            "I was expecting {other_amount}.",
        ],
        "cross": [
            "I'm not asking for a refund, I just want to understand the charge.",
            "I haven't canceled anything.",
            "I don't want to cancel, I just want the charges to make sense.",
            "I upgraded to get {feature}.",
            "We moved offices recently so the address on file may be old.",
            "The billing page in settings shows an error, so I can't check myself.",
            "I can log in fine, it's just the numbers that look off.",
            "If it's a mistake I'd like the money back.",
        ],
    },
    "cancel_subscription": {
        "openings": [
            "I've been on the {plan} for {n_months} months.",
            "We're moving to a different tool.",
            "Money is a bit tight right now.",
            "My free trial ends {date_abs}.",
            "We signed up for the annual plan last year.",
            "We've finished the project we needed this for.",
        ],
        "cores": [
            "I want to cancel my subscription.",
            "How do I cancel my plan?",
            "Please cancel my account at the end of this billing period.",
            "I'd like to stop my membership.",
            "Can you make sure I'm not charged again?",
            "Please don't renew my subscription.",
            "How do I turn off auto-renew?",
            "I want to downgrade to the free plan.",
            "Cancel my {plan}, please.",
            "We no longer need the service, please close our account.",
            "Can I pause my subscription instead of canceling?",
            "I tried to cancel in settings but the button doesn't do anything.",
            "Please end my trial before it turns into a paid plan.",
            "What happens to my data if I cancel?",
            "Can I cancel and get a refund for the rest of the year?",
            "I'm not using it anymore, please cancel.",
            "Unsubscribe me from the paid plan.",
            "How much notice do I need to give to cancel?",
            "Please end our contract when it's up in {month}.",
            "Can you confirm my cancellation went through?",
            "I want to close my account completely.",
            "Stop my monthly plan please.",
            "I'd like to opt out of the renewal.",
            "Is there a cancellation fee?",
            "I signed up by mistake, please cancel it.",
            "Please cancel before the next charge on {date_abs}.",
            "How do I end my subscription from the app?",
        ],
        "terse": [
            "cancel my sub", "cancel subscription", "stop auto renew",
            "how to cancel", "pls cancel", "end my plan",
            "Cancellation request", "unsubscribe", "close account",
        ],
        "details": [
            "The account is under my work email.",
            "We've moved to another provider.",
            "I'll export my data first.",
            "I don't want to be billed for next month.",
            "It renews on {date_abs}.",
            "There are {seats} seats on our plan.",
        ],
        "cross": [
            "I don't need a refund for this month, just stop future charges.",
            "The last invoice was {amount}, which is more than we can justify.",
            "The app has been too buggy for us to rely on.",
            "We never really got the hang of {feature}.",
            "I was charged again {date_rel} even though I barely use it.",
            "Getting locked out every other week was the last straw.",
        ],
    },
    "technical_issue": {
        "openings": [
            "Since your update {date_rel} things have been broken.",
            "I'm using the {device}.",
            "Our whole team is affected.",
            "This started {date_rel}.",
            "I use {feature} every day for work.",
        ],
        "cores": [
            "The app keeps crashing when I open it.",
            "I get {error} when I try to {action}.",
            "The page won't load.",
            "{feature} isn't working.",
            "The CSV export gives me an empty file.",
            "Uploads fail at 99%.",
            "The dashboard is really slow today.",
            "Notifications have stopped coming through.",
            "The sync between my phone and laptop is broken.",
            "Buttons don't respond when I click them.",
            "I keep getting logged out every few minutes.",
            "The checkout page freezes when I try to pay.",
            "The API is returning {error}.",
            "Images aren't showing up on the product page.",
            "Search doesn't return any results.",
            "The app won't install on my {device}.",
            "Data I saved yesterday has disappeared.",
            "The integration with our calendar stopped working.",
            "Is there an outage right now?",
            "The mobile app shows a blank screen after the logo.",
            "Reports are showing the wrong numbers.",
            "I can't attach files to messages.",
            "Webhooks stopped firing {date_rel}.",
            "The editor lags when I type.",
            "The download link gives a 404.",
            "Something is wrong with the website, it just spins.",
            "The password reset page throws an error.",
            "The app is draining my battery.",
            "The tracking widget on the order page is broken.",
            "I'm getting a certificate warning when I open the site.",
            "{feature} has been broken since {date_rel}.",
            "Clicking save does nothing on my {device}.",
        ],
        "terse": [
            "app crashing", "site down?", "bug in export", "page not loading",
            "sync broken", "getting {error}", "{feature} not working",
            "Bug report: {error}", "app keeps freezing", "blank screen on {device}",
        ],
        "details": [
            "I've cleared my cache and cookies.",
            "I'm on version {version}.",
            "I've already tried reinstalling.",
            "It happens in both {browser} and {browser2}.",
            "Screenshot attached.",
            "It worked fine last week.",
            "Restarting doesn't help.",
            "It only happens on the {device}.",
        ],
        "cross": [
            "I can log in fine, it's after that it breaks.",
            "I'm paying for the {plan} so I expect this to work.",
            "I don't want a refund, I just need it to work.",
            "If this isn't fixed soon we'll probably cancel.",
            "It also happened when I tried to track my order.",
            "I've reset my password just in case but no change.",
            "It started right after my card was charged for the renewal.",
        ],
    },
    "change_address": {
        "openings": [
            "I'm moving next week.",
            "I just placed {order}.",
            "I've moved to {city}.",
            "I made a typo when I checked out.",
            "I ordered {a_product} {date_rel}.",
        ],
        "cores": [
            "Can I change the delivery address on {order}?",
            "I need to update my shipping address.",
            "Please send my order to a different address.",
            "I entered the wrong address, can you fix it?",
            "How do I change my default address?",
            "Please change the address to {street}, {city}.",
            "Can you redirect the package to my work address?",
            "Is it too late to change where {order} is going?",
            "I put in the wrong zip code.",
            "Please update the apartment number on my order.",
            "Can I add a second delivery address to my account?",
            "My address has changed, please update it for future orders.",
            "Could you ship it to my parents' place instead?",
            "I've moved, can you update my details?",
            "The street name on my order is misspelled.",
            "Please change the address before it ships.",
            "Can I have it delivered to a pickup point instead of my home?",
            "How do I edit my address in the app?",
            "Update my address to {street}, please.",
            "The house number is wrong on {order}.",
            "I'd like my next box to go to my new place.",
            "Can you change the billing and shipping address to {city}?",
            "The courier says the address is incomplete, can I correct it?",
            "Please correct the zip code on my account.",
        ],
        "terse": [
            "change address", "wrong address on {order}", "new shipping address",
            "update address pls", "address change", "Address update - {order}",
            "change delivery address",
        ],
        "details": [
            "The old address is no longer valid.",
            "Nobody will be at the old place to sign for it.",
            "I moved on {date_abs}.",
            "The new address is {street}, {city}.",
            "The order number is {order_no}.",
        ],
        "cross": [
            "The order hasn't shipped yet according to the tracking page.",
            "I don't want to cancel the order, just change where it goes.",
            "I've already been charged so I'd rather not reorder.",
            "I can't update it in my account settings because the page won't save.",
            "The tracking says it's still at the warehouse.",
            "My billing address can stay the same.",
        ],
    },
    "product_question": {
        "openings": [
            "I'm thinking about buying the {product}.",
            "I'm comparing a few options for our team.",
            "I saw the {product} on your website.",
            "We're evaluating the {plan}.",
            "I'm looking for a gift.",
        ],
        "cores": [
            "Does the {product} come in other colors?",
            "Is the {product} compatible with my {device}?",
            "What are the dimensions of the {product}?",
            "Does the {plan} include {feature}?",
            "Will the {product} be back in stock soon?",
            "What's the difference between the Pro and Team plans?",
            "Does it come with a warranty?",
            "Is the {product} waterproof?",
            "Can I use {feature} on the free plan?",
            "What material is the {product} made of?",
            "Do you ship to {country}?",
            "Is there a bigger size available?",
            "Does the software support single sign-on?",
            "How many users can I add on the {plan}?",
            "Does the {product} need batteries?",
            "Is there a student discount?",
            "Can the {product} be used outdoors?",
            "Do you have a public API?",
            "Is the {product} dishwasher safe?",
            "What's the battery life on the {product}?",
            "Does {feature} work offline?",
            "Do you offer a free trial of the {plan}?",
            "Are refurbished units available?",
            "How long does the {product} last with normal use?",
            "Can I integrate it with our CRM?",
            "What's included in the box?",
            "Do you sell replacement parts for the {product}?",
            "Is your data stored in the EU?",
            "Can I return it if it doesn't fit?",
            "Is the {product} suitable for a small apartment?",
        ],
        "terse": [
            "is {product} in stock", "sizes?", "do you ship to {country}",
            "warranty?", "{product} colors?", "Question about {product}",
            "does {plan} include {feature}", "pre-sales question",
        ],
        "details": [
            "I need it for a small office.",
            "I'd be buying {n} of them.",
            "The listing doesn't say.",
            "I couldn't find it in the FAQ.",
            "It's for my {device}.",
        ],
        "cross": [
            "I want to be sure before buying because returns are a hassle.",
            "I'd be paying {amount}, so I want to be sure.",
            "I need it delivered before {date_abs}.",
            "My current subscription renews soon, so I'm deciding whether to upgrade.",
            "My last one broke and I had to get a refund.",
            "We had trouble with another tool crashing all the time.",
        ],
    },
}

# Underspecified requests, as real customers often write them. Each one is
# shared by the intents listed with it, so the rest of the message (if any)
# has to carry the label; this is where most honest baseline errors come from.
# one-letter aliases keep the table below readable
R, D, A, B, C, T, X, P = ("refund_request", "delivery_status", "account_access",
                          "billing_question", "cancel_subscription",
                          "technical_issue", "change_address", "product_question")
VAGUE_CORES = [
    ("I have a question about {order}.", [R, D, X, P]),
    ("Something's wrong with my order.", [R, D, X]),
    ("Can someone help me with my account?", [A, B, C, T, X]),
    ("I need help with my subscription.", [B, C, A]),
    ("It's not working.", [T, A, P]),
    ("Please sort this out.", [R, D, A, B, C, T, X]),
    ("What are my options here?", [R, C, B, P, X]),
    ("Can someone get back to me about this?", [R, D, A, B, C, T, X, P]),
    ("I need to make a change to {order}.", [X, R, D]),
    ("I paid but I still don't have anything.", [R, D, B]),
    ("Can you look into my plan?", [B, C, P]),
    ("I'd like to talk to someone about my payment.", [B, R, C]),
    ("I can't get it to work.", [T, A, P]),
    ("Who do I talk to about {order}?", [R, D, X]),
    ("I need to fix something on my account.", [A, X, B]),
    ("Is there anything you can do?", [R, D, A, B, C, T, X]),
    ("Please check {order} for me.", [D, R, X]),
    ("This is about my {plan}.", [B, C, P, A]),
]
VAGUE_TERSE = [
    ("help", [R, D, A, B, C, T, X, P]),
    ("order {order_no}", [R, D, X]),
    ("question about my account", [A, B, C]),
    ("issue with {order}", [R, D, X]),
    ("need help asap", [R, D, A, B, C, T, X]),
    ("problem with my plan", [B, C, T]),
    ("not working", [T, A]),
    ("{product}", [P, R, D]),
    ("{plan} question", [B, C, P]),
]


def vague_for(intent: str, table) -> list[str]:
    return [template for template, intents in table if intent in intents]


# Which intents a message most plausibly wanders into. Used for the occasional
# secondary request ("Also, ...").
RELATED = {
    "refund_request": ["delivery_status", "billing_question", "cancel_subscription"],
    "delivery_status": ["change_address", "refund_request"],
    "account_access": ["technical_issue", "billing_question"],
    "billing_question": ["refund_request", "cancel_subscription", "account_access"],
    "cancel_subscription": ["billing_question", "refund_request"],
    "technical_issue": ["account_access", "product_question"],
    "change_address": ["delivery_status", "account_access"],
    "product_question": ["billing_question", "delivery_status"],
}

# --------------------------------------------------------------------------
# Style fragments by channel and language variety.
# --------------------------------------------------------------------------

EMAIL_GREETINGS = {
    "en-US": ["Hi there,", "Hello,", "Hi support team,", "Dear Support,", "Hey team,", "Hi,"],
    "en-GB": ["Hello,", "Hi there,", "Dear Sir or Madam,", "Morning,", "Hi all,", "Good afternoon,"],
    "en-IN": ["Dear Sir/Madam,", "Hello Team,", "Dear Team,", "Respected Sir/Madam,", "Hi Team,", "Greetings,"],
}
CHAT_GREETINGS = {
    "en-US": ["hi", "hey", "hello", "Hi!", "hey there"],
    "en-GB": ["hi", "hiya", "hello", "Hi,", "morning"],
    "en-IN": ["hi", "hello", "Hi team", "hello sir", "Hi,"],
}
SIGNOFFS = {
    "en-US": ["Thanks,", "Best,", "Thank you,", "Best regards,", "Cheers,"],
    "en-GB": ["Kind regards,", "Many thanks,", "Cheers,", "Best wishes,", "Thanks,"],
    "en-IN": ["Thanks & Regards,", "Regards,", "Thanks and regards,", "Warm regards,", "Thanking you,"],
}
POLITE = {
    "common": ["Thanks in advance.", "Thank you.", "Appreciate the help.", "Thanks!",
               "Any help would be great.", "Thanks for your help."],
    "en-US": ["Thanks so much!", "Appreciate it!", "Let me know what you find."],
    "en-GB": ["Many thanks.", "Much appreciated.", "I'd be grateful for a quick reply.",
              "Cheers.", "Thanks ever so much."],
    "en-IN": ["Kindly do the needful.", "Please revert back at the earliest.",
              "Kindly revert.", "Please look into the same on priority.",
              "Request you to resolve this today itself.", "Kindly help."],
}
URGENT = {
    "common": ["This is urgent.", "Please reply soon.", "I need this sorted today.",
               "I've contacted you twice already.", "Getting quite frustrated now.",
               "Could you do me a favor and look at this today?"],
    "en-US": ["Please get back to me ASAP."],
    "en-GB": ["This is getting a bit ridiculous.", "Bit of a nightmare, to be honest."],
    "en-IN": ["It is very urgent.", "Please treat this as urgent."],
}
CHAT_THANKS = ["thanks", "thx", "ty", "thank you", "cheers", "pls help"]
TIER_NOTES = {
    "free": ["I'm only on the free plan for now.", "I'm on the free tier."],
    "pro": ["I'm a Pro subscriber.", "I pay for Pro."],
    "enterprise": ["We're on an enterprise contract with {seats} seats.",
                   "I'm writing on behalf of our company account.",
                   "Our account manager is out this week, so I'm writing here."],
}

# en-GB and en-IN both use British spelling; en-IN also gets a few idioms below.
UK_SPELLING = [
    ("color", "colour"), ("colors", "colours"), ("favor", "favour"),
    ("canceled", "cancelled"), ("canceling", "cancelling"),
    ("recognize", "recognise"), ("centers", "centres"), ("center", "centre"),
    ("organization", "organisation"), ("apologize", "apologise"),
    ("neighbors", "neighbours"),
]
GB_WORDS = [("zip code", "postcode"), ("package", "parcel"), ("apartment", "flat"),
            ("parents' place", "parents' house"), ("I'm moving next week", "I'm moving house next week")]
IN_WORDS = [("zip code", "PIN code"), ("package", "parcel"), ("apartment", "flat"),
            ("I'm moving next week", "I am shifting to a new house next week"),
            ("I've moved", "I have shifted")]
# Indian English in support mail tends to be more formal: fewer contractions.
EXPANSIONS = [("can't", "cannot"), ("I'm", "I am"), ("don't", "do not"),
              ("haven't", "have not"), ("hasn't", "has not"), ("I've", "I have"),
              ("doesn't", "does not"), ("isn't", "is not"), ("won't", "will not"),
              ("It's", "It is"), ("it's", "it is"), ("I'd", "I would")]
IN_REWRITES = [
    ("My order still hasn't arrived.", "I have not received my order till now."),
    ("I can't log in to my account.", "I am unable to login to my account."),
    ("The page won't load.", "Page is not loading."),
    ("I want to cancel my subscription.", "I want to cancel my subscription, please do the needful."),
]
CHAT_SLANG = [("please", "pls"), ("thanks", "thx"), ("you", "u"), ("I'm", "im"),
              ("can't", "cant"), ("don't", "dont"), ("because", "cos")]

QWERTY_NEIGHBOURS = {
    "a": "qs", "s": "ad", "d": "sf", "e": "wr", "r": "et", "t": "ry", "i": "uo",
    "o": "ip", "n": "bm", "m": "n", "l": "k", "c": "xv", "u": "yi", "h": "gj",
}


def _weighted(rng: random.Random, weights: dict) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def fill(ctx: Ctx, template: str) -> str:
    # Recursive because some slot values contain slots ("error code E-{n3}").
    return re.sub(r"\{(\w+)\}", lambda m: fill(ctx, SLOT_MAKERS[m.group(1)](ctx)), template)


def capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def replace_words(text: str, pairs, rng: random.Random | None = None, p: float = 1.0) -> str:
    """Whole-word replacement, keeping a leading capital."""
    for old, new in pairs:
        if rng is not None and rng.random() > p:
            continue
        pattern = re.compile(r"(?<![\w'])" + re.escape(old) + r"(?![\w'])", re.IGNORECASE)

        def repl(m, new=new):
            return capitalise(new) if m.group(0)[0].isupper() else new

        text = pattern.sub(repl, text)
    return text


def add_typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 4]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.choice(["swap", "drop", "double", "neighbour"])
    if kind == "swap":
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif kind == "drop":
        w = w[:j] + w[j + 1:]
    elif kind == "double":
        w = w[:j] + w[j] + w[j:]
    elif w[j].lower() in QWERTY_NEIGHBOURS:
        w = w[:j] + rng.choice(QWERTY_NEIGHBOURS[w[j].lower()]) + w[j + 1:]
    words[i] = w
    return " ".join(words)


def pick(ctx: Ctx, templates: list[str]) -> str:
    """Fill a template not yet used in this message (no repeated sentences)."""
    fresh = [t for t in templates if t not in ctx.memo.get("used", ())]
    template = ctx.rng.choice(fresh or templates)
    ctx.memo.setdefault("used", []).append(template)
    return capitalise(fill(ctx, template))


def politeness(ctx: Ctx, table: dict) -> str:
    # variety-specific phrases are weighted up so the varieties sound distinct
    return ctx.rng.choice(table["common"] + table[ctx.variety] * 2)


def body_sentences(ctx: Ctx, intent: str, p_opening: float, p_detail: float,
                   p_cross: float) -> list[str]:
    """The message content: optional context around the core request."""
    rng, blocks = ctx.rng, INTENTS[intent]
    before, after = [], []
    if rng.random() < p_opening:
        before.append(pick(ctx, blocks["openings"]))
    if rng.random() < (0.04 if ctx.tier == "free" else 0.12):
        before.insert(0, pick(ctx, TIER_NOTES[ctx.tier]))
    if rng.random() < p_detail:
        after.append(pick(ctx, blocks["details"]))
    if rng.random() < p_cross:
        # Context first or last: both orders occur in real tickets.
        (before if rng.random() < 0.5 else after).append(pick(ctx, blocks["cross"]))
    if rng.random() < P_SECONDARY_ASK:
        ask = pick(ctx, INTENTS[rng.choice(RELATED[intent])]["cores"])
        if not re.match(r"I\b", ask):
            ask = ask[:1].lower() + ask[1:]
        after.append("Also, " + ask)
    if rng.random() < P_VAGUE:
        core = pick(ctx, vague_for(intent, VAGUE_CORES))
    else:
        core = pick(ctx, blocks["cores"])
    return before + [core] + after


def compose(rng: random.Random, intent: str, channel: str, tier: str, variety: str) -> str:
    ctx = Ctx(rng, variety, tier)
    if rng.random() < P_TERSE[channel]:
        vague = vague_for(intent, VAGUE_TERSE)
        if vague and rng.random() < P_VAGUE:
            text = fill(ctx, rng.choice(vague))
        else:
            text = fill(ctx, rng.choice(INTENTS[intent]["terse"]))
        if channel == "chat" and rng.random() < 0.3:
            text = rng.choice(CHAT_GREETINGS[variety]) + " " + text
    elif channel == "email":
        sentences = body_sentences(ctx, intent, 0.75, 0.65, P_CROSS_CONTEXT)
        if rng.random() < 0.25:
            sentences.append(pick(ctx, INTENTS[intent]["details"]))
        if rng.random() < 0.2:
            sentences.append(politeness(ctx, URGENT))
        if rng.random() < 0.8:
            sentences.append(politeness(ctx, POLITE))
        greeting = rng.choice(EMAIL_GREETINGS[variety])
        signoff = rng.choice(SIGNOFFS[variety]) + "\n" + rng.choice(SIGNOFF_NAMES[variety])
        if rng.random() < 0.7:
            text = greeting + "\n\n" + " ".join(sentences) + "\n\n" + signoff
        else:  # some people write the whole mail as one paragraph
            text = greeting + " " + " ".join(sentences) + " " + signoff.replace("\n", " ")
    elif channel == "chat":
        sentences = body_sentences(ctx, intent, 0.2, 0.3, P_CROSS_CONTEXT * 0.8)
        if rng.random() < 0.5:
            sentences.insert(0, rng.choice(CHAT_GREETINGS[variety]))
        if rng.random() < 0.25:
            sentences.append(rng.choice(CHAT_THANKS))
        text = " ".join(sentences)
    else:  # web_form: terse, factual, no greeting
        sentences = body_sentences(ctx, intent, 0.3, 0.5, P_CROSS_CONTEXT)
        if rng.random() < 0.1 and variety == "en-IN":
            sentences.append(politeness(ctx, POLITE))
        text = " ".join(sentences)

    text = apply_variety(rng, text, variety)
    return apply_noise(rng, text, channel)


def apply_variety(rng: random.Random, text: str, variety: str) -> str:
    if variety == "en-US":
        return text
    text = replace_words(text, UK_SPELLING)
    if variety == "en-GB":
        return replace_words(text, GB_WORDS)
    for old, new in IN_REWRITES:
        text = text.replace(old, new)
    text = replace_words(text, IN_WORDS)
    return replace_words(text, EXPANSIONS, rng, p=0.6)


def apply_noise(rng: random.Random, text: str, channel: str) -> str:
    if channel == "chat":
        text = replace_words(text, CHAT_SLANG, rng, p=0.25)
    if rng.random() < P_TYPO:
        for _ in range(rng.choice([1, 1, 2])):
            text = add_typo(rng, text)
    p_lower = {"chat": 0.45, "email": 0.06, "web_form": 0.12}[channel]
    if rng.random() < p_lower:
        text = text.lower()
    p_nopunct = {"chat": 0.35, "email": 0.03, "web_form": 0.15}[channel]
    if rng.random() < p_nopunct:
        text = re.sub(r"[.,!?](?=\s|$)", "", text)
    return text.strip()


def dedup_key(text: str) -> str:
    """Near-exact key: differences of case, punctuation or spacing don't count
    as a different message (stops 'refund pls' and 'Refund pls.' both appearing)."""
    return " ".join(re.sub(r"[^\w#£$₹]+", " ", text.lower()).split())


def generate(rng: random.Random) -> list[dict]:
    labels = [intent for intent, n in INTENT_COUNTS.items() for _ in range(n)]
    rng.shuffle(labels)  # ids carry no label order
    seen: set[str] = set()
    rows = []
    for i, intent in enumerate(labels, start=1):
        channel = _weighted(rng, CHANNEL_WEIGHTS)
        tier = _weighted(rng, TIER_WEIGHTS.get(intent, TIER_WEIGHTS["default"]))
        variety = _weighted(rng, VARIETY_WEIGHTS)
        for _attempt in range(200):
            text = compose(rng, intent, channel, tier, variety)
            if dedup_key(text) not in seen:
                break
        else:
            raise RuntimeError(f"could not make a unique {intent} message")
        seen.add(dedup_key(text))
        rows.append({
            "id": f"hd-{i:05d}",
            "text": text,
            "label": intent,
            "channel": channel,
            "customer_tier": tier,
            "language_variety": variety,
        })
    return rows


def stratified_split(rng: random.Random, rows: list[dict]):
    test_ids = set()
    for intent in INTENT_COUNTS:  # dict order, not set order: deterministic
        ids = [r["id"] for r in rows if r["label"] == intent]
        rng.shuffle(ids)
        test_ids.update(ids[: round(len(ids) * TEST_FRACTION)])
    train = [r for r in rows if r["id"] not in test_ids]
    test = [r for r in rows if r["id"] in test_ids]
    return train, test


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(SEED)
    rows = generate(rng)
    train, test = stratified_split(rng, rows)
    assert len({r["text"] for r in rows}) == len(rows), "duplicate texts"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_jsonl(OUT_DIR / "train.jsonl", train)
    write_jsonl(OUT_DIR / "test.jsonl", test)
    print(f"wrote {len(train)} train and {len(test)} test rows to {OUT_DIR}")


if __name__ == "__main__":
    main()
