// RFC 3339 timestamps in UTC, for the snapshot's saved_at and for log lines.
//
// Written out (Howard Hinnant's civil_from_days) so that formatting needs
// neither gmtime_r nor the time zone database, and so the core stays free of
// libc. The time itself is always passed in.

/// `2026-11-27T10:42:01Z`, or `2026-11-27T10:42:01.512Z` with `milliseconds`.
public func rfc3339(_ secondsSince1970: Int64, milliseconds: Int? = nil) -> String {
    let days = secondsSince1970 >= 0 ? secondsSince1970 / 86400 : (secondsSince1970 - 86399) / 86400
    let secondOfDay = secondsSince1970 - days * 86400
    let (year, month, day) = civilDate(daysSinceEpoch: days)
    var text = "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):"
        + "\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))"
    if let milliseconds { text += ".\(pad(Int64(milliseconds), 3))" }
    return text + "Z"
}

/// Year, month and day of the proleptic Gregorian calendar for a count of
/// days since 1970-01-01.
func civilDate(daysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
    let shifted = days + 719_468  // from 0000-03-01, so the leap day ends each year
    let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
    let dayOfEra = shifted - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let monthIndex = (5 * dayOfYear + 2) / 153  // 0 is March
    let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
    let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
    return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
}

private func pad(_ value: Int64, _ width: Int) -> String {
    let digits = String(value)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
