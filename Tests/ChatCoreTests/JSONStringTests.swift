import ChatCore
import Testing

@Suite struct JSONStringTests {
    @Test func everyCharacterThatCouldBreakALineOrTheLiteralIsEscaped() {
        #expect(jsonString(#"say "hi" \ bye"#) == #""say \"hi\" \\ bye""#)
        #expect(jsonString("a\nb\rc\td") == #""a\nb\rc\td""#)
        #expect(jsonString("\u{1}\u{7f}\u{85}\u{2028}\u{2029}") == #""\u0001\u007f\u0085\u2028\u2029""#)
        #expect(jsonString("héllo 👋") == "\"héllo 👋\"")
    }
}
