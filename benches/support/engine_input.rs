//! The engine bench's input (shared by `benches/engine.rs` and `examples/engine_calls.rs`).

use careguard::engine::{Message, Role};

/// An ordinary companion-bot conversation of about 3 KB in 8 turns (4 user, 4 assistant), with a
/// few words that look risky out of context, so the matchers do real work.
pub fn conversation() -> Vec<Message> {
    let user = [
        "Hey, I had a pretty long week. Work has been killing me, the commute is brutal and my phone died twice on the train, so I missed a call from my sister about the weekend plans. Anyway, I wanted to ask you for some ideas to unwind that don't involve screens.",
        "Reading sounds nice. I used to read a lot of mystery novels, the kind where the detective figures out who did it in the last chapter. Can you suggest a few authors? I liked the older ones more than the new thrillers, which feel rushed to me honestly.",
        "Cool, thanks. Another thing: I want to start cooking at home more because eating out is getting expensive. I'm not a great cook and I get overwhelmed by recipes with twenty ingredients. What are three simple dinners I could make this week with basic stuff?",
        "That's really helpful. Last question for tonight. My friend and I are planning a photography trip next month and we want to shoot some skylines and waterfront views at sunset. What should I pack, and any tips for getting sharp photos without a tripod?",
    ];
    let assistant = [
        "That sounds like a tiring week. Some screen-free ways to unwind: a walk without headphones, a warm shower and an early night, cooking something simple, journaling for ten minutes, or reading a physical book. Would any of those fit your evening?",
        "If you like classic mysteries, try Agatha Christie, Dorothy L. Sayers, Josephine Tey or Georges Simenon. They take their time with clues, and the endings land. Want a specific first book for any of them?",
        "Three easy ones: a sheet-pan of chicken thighs with potatoes and carrots, pasta with garlic, olive oil and spinach, and a vegetable fried rice with eggs. Each needs under ten ingredients and one pan or pot.",
        "",
    ];
    let mut messages = vec![Message::new(
        Role::System,
        "You are a friendly companion. Keep answers short and kind.",
    )];
    for (u, a) in user.iter().zip(assistant.iter()) {
        messages.push(Message::new(Role::User, *u));
        if !a.is_empty() {
            messages.push(Message::new(Role::Assistant, *a));
        }
    }
    // Pad to about 3 KB with more ordinary chat in the earlier turns.
    messages[1].content.push_str(" Also, my manager keeps scheduling meetings at lunch, which is annoying but whatever, I'll survive. I just need to get through this quarter and then I can take a few days off to recharge at my parents' place by the lake.");
    messages[3].content.push_str(" My sister says I should try audiobooks during the commute, but I tend to zone out and lose the thread. Maybe short stories would work better for that.");
    messages
}

pub fn reply() -> String {
    "For a sunset skyline shoot, pack a fast prime or a standard zoom, spare batteries (cold drains them), a lens cloth, and a small bean bag you can rest the camera on. Without a tripod: brace your elbows against your body or a railing, raise the ISO a little rather than dropping the shutter speed below one over your focal length, turn on image stabilisation, and shoot short bursts so at least one frame is sharp. Arrive thirty minutes before sunset to scout the waterfront and find a spot with a clean foreground. Blue hour, the twenty minutes after the sun goes down, usually gives the best balance between the sky and the city lights. If you shoot in RAW you can recover the shadows later. Have a great trip with your friend, and tell me how the photos turn out!".to_string()
}
