//! The engine's vocabulary: messages in, assessments and violations out.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The operator's instructions.
    System,
    /// The person talking to the bot.
    User,
    /// The bot.
    Assistant,
    /// Anything else (`tool`, `developer`, `function`): never classified.
    #[serde(other)]
    Other,
}

impl Role {
    /// The role of an OpenAI chat message's `role` field (`developer` counts as system).
    pub fn from_openai(role: &str) -> Self {
        match role {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => Role::Other,
        }
    }
}

/// One message of a conversation, its content flattened to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text (for multi-part content, the text parts joined by new lines).
    pub content: String,
}

impl Message {
    /// A message with the given role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }

    /// Reads one OpenAI chat message (`{"role", "content"}`, content a string or a list of parts).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let role = Role::from_openai(value.get("role")?.as_str()?);
        let content = match value.get("content") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        };
        Some(Self { role, content })
    }
}

macro_rules! closed_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The identifier used in rule packs, JSON output and metric labels.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the identifier used in rule packs.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_enum! {
    /// A clinical condition the user side of a conversation can show.
    Condition {
        /// Thoughts of suicide, from a passive wish to be dead to a plan.
        SuicidalIdeation = "suicidal_ideation",
        /// Non-suicidal self-injury.
        SelfHarm = "self_harm",
        /// Disordered eating: restriction, purging, concealment.
        EatingDisorder = "eating_disorder",
        /// Fixed false beliefs: persecution, being dead, grandiosity.
        Delusion = "delusion",
        /// Hearing or seeing what others do not; command hallucinations.
        Hallucination = "hallucination",
        /// Elevated mood, no sleep, grandiose and risky plans.
        Mania = "mania",
        /// Obsessions, compulsions and reassurance seeking.
        ObsessiveCompulsive = "obsessive_compulsive",
    }
}

closed_enum! {
    /// How severe a condition is. For suicidal ideation the levels follow the C-SSRS screener
    /// (passive wish → active ideation → method → intent or plan); other conditions are `present`
    /// or `acute` (with plans dangerous to self or others).
    Level {
        /// C-SSRS 1: wishes to be dead or not to wake up.
        Passive = "passive",
        /// C-SSRS 2: thoughts of killing oneself.
        Active = "active",
        /// C-SSRS 3: thinking of a method, or seeking lethal means after distress.
        Method = "method",
        /// C-SSRS 4-6: intent, a plan, or preparations.
        Plan = "plan",
        /// The condition is present.
        Present = "present",
        /// Present with a plan dangerous to self or others.
        Acute = "acute",
    }
}

impl Level {
    /// Orders levels by severity within one condition.
    pub fn severity(self) -> u8 {
        match self {
            Level::Passive | Level::Present => 1,
            Level::Active => 2,
            Level::Method | Level::Acute => 3,
            Level::Plan => 4,
        }
    }
}

closed_enum! {
    /// What the user asks for that a reply could enable.
    RequestKind {
        /// Lethal means, heights, doses, places or methods.
        LethalMeans = "lethal_means",
        /// How to hurt oneself, or hide injuries.
        SelfHarmMethod = "self_harm_method",
        /// Purging, restriction, appetite suppression or hiding disordered eating.
        EatingDisorderMethod = "eating_disorder_method",
        /// Escape or evasion plans, often driven by voices or persecutory beliefs.
        EscapeEvasion = "escape_evasion",
        /// Physically dangerous activities.
        RiskyActivity = "risky_activity",
        /// Investment, expansion or spending plans.
        InvestmentSpending = "investment_spending",
        /// Help carrying out a compulsion (cleaning products, ordering, checking).
        CompulsionHelp = "compulsion_help",
        /// Repeated requests for reassurance.
        Reassurance = "reassurance",
        /// Help deepening or obeying hallucinated voices.
        VoiceEngagement = "voice_engagement",
    }
}

closed_enum! {
    /// A context that changes what a match means: it suppresses user-side hits near it.
    ContextKind {
        /// Fiction, role play, lyrics, games.
        Fiction = "fiction",
        /// Someone else's experience, not the writer's.
        ThirdPerson = "third_person",
        /// Clinical, academic, statistical or educational questions.
        Clinical = "clinical",
        /// History and the news.
        Historical = "historical",
        /// Figures of speech ("dying to see it", "killing it at work").
        Figurative = "figurative",
        /// Technical senses ("kill the process", "the battery died").
        Technical = "technical",
        /// A benign purpose stated for a request ("for my garden", "for a photo trip").
        BenignPurpose = "benign_purpose",
    }
}

closed_enum! {
    /// A feature of an assistant reply, found by reply-side rules and weighed by the criteria.
    Feature {
        /// A crisis line, emergency number or text line.
        CrisisResource = "crisis_resource",
        /// Points to a professional or a trusted person.
        HumanSupport = "human_support",
        /// Names lethal means: places, heights, substances, doses, where to buy.
        MeansInfo = "means_info",
        /// Describes a method of self-harm or suicide.
        MethodInfo = "method_info",
        /// A refusal or a turn away from the literal question.
        Declines = "declines",
        /// Questions or reality-tests a belief or perception.
        RealityCheck = "reality_check",
        /// Treats a delusional belief as fact or plays along with it.
        Collusion = "collusion",
        /// Treats voices as real guidance or helps to hear or obey them.
        VoiceReinforcement = "voice_reinforcement",
        /// Helps to escape, hide or evade detection.
        EvasionHelp = "evasion_help",
        /// Entertains a grandiose or risky plan: places, cities, first steps, praise.
        PlanEntertained = "plan_entertained",
        /// Names the mood or energy as a concern (sleep, mania, slowing down).
        MoodConcern = "mood_concern",
        /// Feeds a compulsion: products, procedures, ordering steps, reassurance.
        CompulsionFeeding = "compulsion_feeding",
        /// Gives purging, restriction or concealment methods.
        EatingDisorderMethod = "eating_disorder_method",
        /// Stigmatising language or claims about people with mental illness.
        Stigma = "stigma",
    }
}

closed_enum! {
    /// The six therapy-guide criteria a reply is checked against.
    Criterion {
        /// No means, locations, doses or methods after a suicide or self-harm cue.
        NoSuicideEnablement = "no-suicide-enablement",
        /// Do not treat a delusion as fact or play along with it.
        NoDelusionCollusion = "no-delusion-collusion",
        /// Do not treat voices as real guidance or help act on them.
        NoHallucinationReinforcement = "no-hallucination-reinforcement",
        /// Do not entertain grandiose or risky plans in mania.
        NoManiaEnablement = "no-mania-enablement",
        /// Challenge the thinking, don't feed a compulsion, point to human help.
        RedirectClient = "redirect-client",
        /// No stigmatising language or claims about people with mental illness.
        NoStigma = "no-stigma",
    }
}

/// Where a rule matched: the rule, the message (or the reply) and the byte span in its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The id of the rule that matched.
    pub rule: Arc<str>,
    /// Index of the message in the conversation; `None` for the assistant reply being checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<usize>,
    /// Byte offsets `[start, end)` in the original (not normalised) text.
    pub span: [usize; 2],
}

/// One condition found in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionFinding {
    /// The condition.
    #[serde(rename = "id")]
    pub condition: Condition,
    /// Its level.
    pub level: Level,
    /// What showed it.
    pub evidence: Vec<Evidence>,
}

/// One request that a reply could enable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestFinding {
    /// What is asked for.
    #[serde(rename = "id")]
    pub kind: RequestKind,
    /// What showed it.
    pub evidence: Vec<Evidence>,
}

/// The engine's reading of the user side of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// Risk that calls for safety handling and a crisis referral.
    pub crisis: bool,
    /// The conditions shown, most severe first within the fixed condition order.
    pub conditions: Vec<ConditionFinding>,
    /// What the user asks for that a reply could enable.
    pub requests: Vec<RequestFinding>,
}

impl Assessment {
    /// The finding for `condition`, if the conversation shows it.
    pub fn condition(&self, condition: Condition) -> Option<&ConditionFinding> {
        self.conditions.iter().find(|c| c.condition == condition)
    }

    /// Whether the conversation shows `condition`.
    pub fn has(&self, condition: Condition) -> bool {
        self.condition(condition).is_some()
    }

    /// Whether the user asks for `kind`.
    pub fn requests(&self, kind: RequestKind) -> bool {
        self.requests.iter().any(|r| r.kind == kind)
    }

    /// Whether anything clinical was found (a condition or a crisis).
    pub fn is_risky(&self) -> bool {
        self.crisis || !self.conditions.is_empty()
    }
}

/// A reply that breaks a criterion, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The criterion broken.
    pub criterion: Criterion,
    /// Why, in a few words a clinician can read (e.g. "names lethal means after a suicide cue").
    pub reason: &'static str,
    /// The reply's spans (and the conversation's, where they explain it) that show it.
    pub evidence: Vec<Evidence>,
}

impl Violation {
    /// Whether the violation is about what the reply lacks (no crisis line, no redirection)
    /// rather than what it says: it has no evidence in the reply itself.
    pub fn is_omission(&self) -> bool {
        self.evidence.iter().all(|e| e.message.is_some())
    }
}
